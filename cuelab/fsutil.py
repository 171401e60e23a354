"""File helpers every stage uses: atomic writes, append-only JSONL, JSON reading with clear errors,
and paths that may not leave their data folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from cuelab.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(fd: int) -> None:
    """mkstemp makes 0600 files; give finished files the usual mode (0666 minus the umask)."""
    os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    default_mode(fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` whole, on error it is removed,
    so a crash never leaves a half-written model folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append whole lines and flush them; a crash can at worst leave one partial last line,
    which read_jsonl(skip_partial=True) ignores."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, skip_partial: bool = False) -> Iterator[dict]:
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if skip_partial and n == len(lines) and not line.endswith("\n"):
                return  # a run killed mid-write: the last line is incomplete
            raise DataError(f"malformed JSON on line {n}, column {e.colno}: {e.msg}", file=str(path)) from e


def load_json(path: str | Path) -> Any:
    """json.load with an error that names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError("file not found", file=str(path)) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON at line {e.lineno}, column {e.colno} (char {e.pos}): {e.msg}",
                        file=str(path)) from e


def safe_join(root: str | Path, relative: str, *, file: str | None = None, video_id: str | None = None,
              field: str | None = None) -> Path:
    """root / relative, refusing absolute paths and anything that resolves outside root."""
    rel = str(relative)
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) or ":" in rel.split("/")[0][1:2]:
        raise DataError(f"path {rel!r} is absolute or empty; it must stay inside {root}",
                        file=file, video_id=video_id, field=field)
    root_resolved = Path(root).resolve()
    target = (root_resolved / rel).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise DataError(f"path {rel!r} leaves the data folder {root}", file=file, video_id=video_id, field=field)
    return target


def check_video_id(video_id: str, *, file: str | None = None) -> str:
    """A video id becomes a file name: refuse separators and dot-dot."""
    vid = str(video_id)
    if not vid or vid in (".", "..") or "/" in vid or "\\" in vid or "\x00" in vid or os.path.isabs(vid):
        raise DataError(f"video id {vid!r} is not a plain name (it would leave the data folder)",
                        file=file, video_id=vid, field="id")
    return vid
