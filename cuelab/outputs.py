"""Output folders checked before any work starts: a run that can't write its results should say so at once,
naming the folder, rather than fail (or lose its work) hours later."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cuelab.errors import DataError


def check_output_dir(path: str | Path, field: str = "--out") -> Path:
    """`path` is a folder that exists or can be created, and files can be written in it; else a DataError naming
    it and `field`. Nothing is created: a probe file is written in the nearest existing folder and removed.

    Both os.access and a real write are needed: root passes os.access everywhere, yet a read-only mount or a
    special file system (/sys) still refuses the write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError("is an existing file, not a folder", file=str(path), field=field)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"cannot be created: {existing} is a file, not a folder", file=str(path), field=field)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"cannot be written: no write permission on {existing}", file=str(path), field=field)
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".cuelab-write-check.")
    except OSError as e:
        raise DataError(f"cannot be written: {existing}: {e.strerror}", file=str(path), field=field) from e
    os.close(fd)
    os.unlink(probe)
    return path
