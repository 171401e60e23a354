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


def repair_partial_line(path: str | Path) -> bool:
    """Cut a partial last line (a run killed mid-write) so that appends start on a fresh line; True when one was
    cut. Only for a file no live process is appending to: eval opens its prediction files while holding out_dir's
    eval lock (cuelab.locks), attention its records at the start of a (model, condition)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
        f.seek(0)
        cut = f.read().rfind(b"\n") + 1
        f.truncate(cut)
    return True


def read_jsonl(path: str | Path, skip_partial: bool = False) -> Iterator[dict]:
    path = Path(path)
    # split on "\n" only: ensure_ascii=False leaves U+2028 and friends inside strings, which splitlines breaks on
    lines = [ln + "\n" for ln in read_text(path).split("\n")]
    if lines:
        lines[-1] = lines[-1][:-1]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if skip_partial and n == len(lines) and not line.endswith("\n"):
                return  # a run killed mid-write: the last line is incomplete
            raise DataError(f"malformed JSON on line {n}, column {e.colno}: {e.msg}", file=str(path)) from e


def read_text(path: str | Path) -> str:
    """The file's text as UTF-8, or a DataError naming the file (missing, a folder, unreadable, not UTF-8)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError("file not found", file=str(path)) from e
    except IsADirectoryError as e:
        raise DataError("is a folder, not a file", file=str(path)) from e
    except PermissionError as e:
        raise DataError("cannot be read (permission denied)", file=str(path)) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}, line {line})",
                        file=str(path)) from e


def load_json(path: str | Path) -> Any:
    """json.load with an error that names the file, line and column."""
    path = Path(path)
    text = read_text(path)
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


#: Longest name part an id may give a file (most file systems allow 255 bytes; suffixes and prefixes need room).
MAX_NAME_BYTES = 160


def safe_name(value: str, *, what: str = "id", file: str | None = None, video_id: str | None = None,
              field: str | None = None) -> str:
    """The one check for every id that becomes part of a file name (videos, questions, models, conditions,
    previews, overlays, attention rows): a plain name that cannot leave its folder, or a DataError naming it.

    Refused, not rewritten: a rewritten id could collide with another one and silently mix two videos' files.
    Refused: empty, "." and "..", a leading dot (hidden and temp files are the pipeline's own), path separators,
    NUL and other control characters, "__" (the separator of `<model>__<condition>__<question>` names), and
    names over MAX_NAME_BYTES bytes."""
    name = str(value)
    why = None
    if not name or name in (".", ".."):
        why = "is empty or a dot name"
    elif "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        why = "holds a path separator (it would leave its folder)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "holds a control character"
    elif name.startswith("."):
        why = "starts with a dot (the names of hidden and temporary files)"
    elif "__" in name:
        why = "holds '__' (the separator of <model>__<condition>__<question> file names)"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        why = f"is longer than {MAX_NAME_BYTES} bytes"
    if why:
        raise DataError(f"{what} {name!r} {why}; it cannot name a file", file=file, video_id=video_id,
                        field=field or what)
    return name


def check_video_id(video_id: str, *, file: str | None = None) -> str:
    """A video id becomes a file name (see safe_name)."""
    vid = str(video_id)
    return safe_name(vid, what="video id", file=file, video_id=vid, field="id")
