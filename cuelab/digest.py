"""Content digests of input files and folders, so a file edited in place at the same path counts as a change.

A file up to FULL_DIGEST_BYTES is hashed whole (sha256 of 64 MiB takes ~0.1 s); a larger one (the merged
Something-Else annotations are ~1.5 GB) by its size, its mtime and the sha256 of its first and last MiB: an edit
that keeps the size and the mtime and touches only the middle would slip through, which is why the mtime is in.
A folder (a model's weights) is digested by the names, sizes and mtimes of its files, never their bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FULL_DIGEST_BYTES = 64 << 20
EDGE_BYTES = 1 << 20


def file_digest(path: str | Path) -> str:
    """sha256 (hex) standing for the file's content; "missing" when there is no such file."""
    path = Path(path)
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if path.is_dir():
        return folder_digest(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_DIGEST_BYTES:
            return hashlib.file_digest(f, "sha256").hexdigest()
        h.update(f"size={st.st_size};mtime_ns={st.st_mtime_ns};".encode())
        h.update(f.read(EDGE_BYTES))
        f.seek(st.st_size - EDGE_BYTES)
        h.update(f.read(EDGE_BYTES))
    return h.hexdigest()


def folder_digest(path: str | Path, pattern: str = "*") -> str:
    """sha256 (hex) of the sorted (relative name, size, mtime_ns) of the folder's files (hidden files left out:
    they are temp files); "missing" when there is no such folder."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(path.rglob(pattern)):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue
        st = f.stat()
        h.update(f"{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def json_digest(obj) -> str:
    """sha256 (hex) of a JSON-able value, keys sorted."""
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def stable_int(*parts: object) -> int:
    """A seed part from strings that does not change between Python runs (unlike hash())."""
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:15], 16)
