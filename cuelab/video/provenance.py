"""What a rendered video was made from, so that a rerun re-renders exactly the outputs that went stale.

Each output `<cue>/<id>.mp4` has a sidecar `<cue>/<id>.mp4.json` holding its provenance: the source video's
identity (cuelab.digest: a file up to 64 MiB by its full sha256, a larger one by size, mtime and the sha256 of
its first and last MiB; a JPEG-frame folder by its files' names, sizes and mtimes), the cue and its settings
(every style attribute, so a changed default counts too) and the digest of the video's box tracks (both not for
`plain`, which draws nothing), the codec settings and RENDER_VERSION.

A sidecar rather than one index per folder: each worker writes its own outputs' sidecars with no file shared
between processes or between shards rendering side by side into one folder (an index would need merging and
would be lost or torn as a whole), and a sidecar sits beside its video (copy or prune a cue folder and the
provenance goes with it). The sidecar is written atomically after the video: an output without one (killed in
between, or made by an older cuelab) is treated as stale, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from pathlib import Path

from cuelab.digest import file_digest
from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_json, load_json
from cuelab.tracks import VideoTracks
from cuelab.video.cues import Cue
from cuelab.video.settings import RenderSettings

#: Bump when the drawing or encoding code changes the pixels of any output: every output then re-renders.
RENDER_VERSION = 1


def sidecar_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".json")


def source_identity(path: str | Path) -> dict:
    """The source video's identity: its file name (a .webm and an .mp4 of one id are different sources),
    size for files, and the content digest (cuelab.digest.file_digest; for a frame folder, its listing)."""
    path = Path(path)
    try:
        return {"name": path.name, "kind": "frames" if path.is_dir() else "file",
                "size": None if path.is_dir() else path.stat().st_size, "digest": file_digest(path)}
    except OSError as e:
        raise DataError(f"cannot read the source video ({e.strerror or e})", file=str(path)) from e


def cue_settings(cue: Cue) -> dict:
    """The cue's class and every attribute it draws with (a nested cue, e.g. side_by_side's, in turn)."""
    attrs = {k: cue_settings(v) if isinstance(v, Cue) else v for k, v in sorted(vars(cue).items())}
    return {"class": type(cue).__name__, **attrs}


def tracks_digest(tracks: VideoTracks | None) -> str | None:
    """sha256 of the video's boxes, object by object and frame by frame; None for a video without boxes.
    (Packed as binary numbers, not JSON: this runs for every output on every rerun, and is ~7x faster.)"""
    if tracks is None:
        return None
    h = hashlib.sha256()
    for o in sorted(tracks.tracks):
        frames = sorted(tracks.tracks[o].items())
        h.update(f"{o}\0{len(frames)}\0".encode())
        h.update(array("q", [t for t, _ in frames]).tobytes())
        h.update(array("d", [x for _, box in frames for x in box]).tobytes())
    return h.hexdigest()


def render_provenance(source: dict, cue_name: str, tracks: VideoTracks | None, settings: RenderSettings) -> dict:
    """The provenance one output must carry to be up to date (as it reads back from JSON, to compare equal)."""
    cue = settings.cue(cue_name)
    draws = type(cue) is not Cue  # plain draws nothing: its boxes and style cannot change its pixels
    return json.loads(json.dumps({
        "render_version": RENDER_VERSION, "source": source, "cue": cue_name,
        "cue_settings": cue_settings(cue) if draws else None, "tracks": tracks_digest(tracks) if draws else None,
        "codec": settings.codec()}, default=repr))


def read_provenance(output: str | Path) -> dict | None:
    """The provenance stored beside `output`, or None when there is none (or it is unreadable: re-render)."""
    path = sidecar_path(output)
    if not path.is_file():
        return None
    try:
        stored = load_json(path)
    except DataError:
        return None
    return stored.get("provenance") if isinstance(stored, dict) else None


def write_provenance(output: str | Path, provenance: dict, source_path: str | Path) -> None:
    """Store the provenance beside `output` (call after the output is in place). The source's path is kept for
    the reader only: a dataset moved to another folder does not make its renders stale."""
    atomic_write_json(sidecar_path(output), {"provenance": provenance, "source_path": str(source_path)}, indent=None)


def remove_output(output: str | Path) -> None:
    """Delete a stale output and its sidecar (a run killed in between leaves either one alone: both re-render)."""
    Path(output).unlink(missing_ok=True)
    sidecar_path(output).unlink(missing_ok=True)
