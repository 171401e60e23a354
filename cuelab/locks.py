"""One live run per output folder: `cuelab render` and `cuelab eval` hold a lock in the folder they write.

The lock is fcntl.flock on `<folder>/.cuelab-<task>.lock` (`.cuelab-<task>.shard<i>of<n>.lock` for a shard).
The kernel releases a flock when its owner exits in any way, SIGKILL included, so a lock whose owner is gone is
simply taken over: no guessing from PIDs, which are reused and mean nothing on another host. The file holds the
owner's PID, host, start time and command, for the message a refused run prints; it is never deleted
(deleting a flock file races with a run that has just opened it).

Shards of one job array run side by side in one folder, each under its own shard's lock. A run is refused when a
live run holds its lock, or holds a lock of the same task with another shard count (0/2 beside 0/3, or a whole
run beside shards: their videos overlap). Checking the other locks and taking one's own happen under a short
exclusive gate lock (`.cuelab-<task>.gate`), so two runs starting at once cannot both pass the check.

Re-entrant within one process: taking a lock this process already holds only counts (the pipeline renders the
train split, then the test split, into one folder, and may hold the lock around both calls). Lock files are
opened close-on-exec, so worker and server processes never inherit them.

Because the lock guarantees one live owner per (folder, shard), the owner may delete the temp files and cut the
partial lines that earlier runs of its shard left: whoever wrote them is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import socket
import sys
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from cuelab.errors import DataError

_held: dict[Path, list[int]] = {}  # lock file -> [fd, depth] for the locks this process holds
_guard = threading.Lock()
_SHARD_RE = re.compile(r"\.shard(\d+)of(\d+)\.lock$")


class FolderBusy(DataError):
    """Another live run holds the output folder; the message names it (PID, host, start time, command)."""


def lock_path(folder: str | Path, task: str, shard: tuple[int, int] = (0, 1)) -> Path:
    i, n = shard
    return Path(folder) / (f".cuelab-{task}.lock" if n == 1 else f".cuelab-{task}.shard{i}of{n}.lock")


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _shard_count(path: Path) -> int:
    m = _SHARD_RE.search(path.name)
    return int(m[2]) if m else 1


def owner(path: str | Path) -> dict:
    """What the lock file says about its owner (empty when unreadable)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _busy(folder: Path, task: str, path: Path, why: str) -> FolderBusy:
    o = owner(path)
    who = (f"PID {o.get('pid', '?')} on host {o.get('host', '?')}, started {o.get('started', '?')}, "
           f"command: {o.get('command', '?')}")
    return FolderBusy(f"another `cuelab {task}` is running in {folder}{why}: {who}; wait for it to end or stop it",
                      file=str(path), field="out")


def _acquire(folder: Path, task: str, shard: tuple[int, int], path: Path) -> int:
    """Take the lock file `path` (under the gate), or raise FolderBusy naming the run that holds it or a lock
    of another shard count. Returns the open descriptor that holds the lock."""
    gate = _open(folder / f".cuelab-{task}.gate")
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)  # held by anyone only for the few milliseconds of a check
        fd = _open(path)
        if not _try_lock(fd):
            os.close(fd)
            raise _busy(folder, task, path, "" if shard[1] == 1 else f" (shard {shard[0]}/{shard[1]})")
        for other in sorted(folder.glob(f".cuelab-{task}*.lock")):
            if other == path or other in _held or (shard[1] > 1 and _shard_count(other) == shard[1]):
                continue  # ours, or a sibling shard of the same array (disjoint videos)
            probe = _open(other)
            free = _try_lock(probe)
            os.close(probe)  # closing releases the probe's lock at once
            if not free:
                os.close(fd)
                raise _busy(folder, task, other, f" with another shard count than {shard[0]}/{shard[1]} "
                                                 f"(their videos overlap)")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": shlex.join(sys.argv), "shard": list(shard)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)  # written under the gate: readers never see half
        return fd
    finally:
        os.close(gate)


@contextmanager
def folder_lock(folder: str | Path, task: str, shard: tuple[int, int] = (0, 1)) -> Iterator[Path]:
    """Hold `task`'s lock on `folder` (created if missing) for the body; FolderBusy at once if a live run
    holds it. Yields the lock file's path."""
    folder = Path(folder).resolve()
    path = lock_path(folder, task, shard)
    with _guard:
        if path in _held:
            _held[path][1] += 1
        else:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                _held[path] = [_acquire(folder, task, shard, path), 1]
            except OSError as e:  # not a folder, not writable, ...
                raise DataError(f"cannot take the output folder's lock: {e.strerror or e}", file=str(path),
                                field="out") from e
    try:
        yield path
    finally:
        with _guard:
            entry = _held[path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                os.close(entry[0])  # releases the flock
