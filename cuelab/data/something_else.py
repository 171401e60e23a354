"""The Something-Else annotation format: load (-> `cuelab.tracks.VideoTracks`, keyed by object and by frame
index) and save. The container itself, with its validation and clipping, lives in `cuelab.tracks`.

Real format: `{video_id: [{"name": "<id>/0007.jpg", "labels": [{"box2d": {"x1","y1","x2","y2"},
"category", "gt_annotation": "object 0" | "object 1" | "object hand", "standard_category"}],
"gt_placeholders": [...], "nr_instances": n}]}`. The frame index is the number in `name` minus 1;
lists may be shorter than the video and may skip frames, so list position is never used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_json, check_video_id, load_json, safe_join
# the container (re-exported: attention/run.py still imports VideoTracks from here)
from cuelab.tracks import HAND, VideoTracks  # noqa: F401

_NAME_RE = re.compile(r"^(?P<dir>[^/\\]+)[/\\](?P<num>\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


@dataclass
class AnnotationSet:
    """What a Something-Else file held: the videos that parsed, and one error per video that did not."""

    videos: dict[str, VideoTracks]
    errors: list[DataError] = field(default_factory=list)
    file: str = ""


def _object_id(gt_annotation: str) -> str:
    s = gt_annotation.strip().lower()
    if s.startswith("object "):
        s = s[len("object "):].strip()
    return s


def parse_video(video_id: str, entries: object, *, file: str, root: Path | None = None) -> VideoTracks:
    """One video's entry list -> tracks. Raises DataError naming file, video and field."""
    vid = check_video_id(video_id, file=file)
    if not isinstance(entries, list):
        raise DataError(f"expected a list of frame entries, got {type(entries).__name__}", file=file, video_id=vid)
    tracks: dict[str, dict[int, tuple]] = {}
    categories: dict[str, str] = {}
    placeholders: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"entry {i} is not an object", file=file, video_id=vid)
        name = entry.get("name")
        if not isinstance(name, str):
            raise DataError(f"entry {i} has no 'name'", file=file, video_id=vid, field="name")
        if root is not None:
            safe_join(root, name, file=file, video_id=vid, field="name")
        elif name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise DataError(f"name {name!r} leaves the data folder", file=file, video_id=vid, field="name")
        m = _NAME_RE.match(name)
        if not m:
            raise DataError(f"name {name!r} is not '<video id>/<frame number>.jpg'", file=file, video_id=vid,
                            field="name")
        t = int(m.group("num")) - 1
        if m.group("dir") != vid:  # a frame of another video: its boxes would be drawn on the wrong clip
            raise DataError(f"frame {name!r} belongs to video {m.group('dir')!r}, not to {vid!r}", file=file,
                            video_id=vid, field="name")
        if t < 0:
            raise DataError(f"frame number in {name!r} must start at 1", file=file, video_id=vid, field="name")
        if "gt_placeholders" in entry and not placeholders:
            placeholders = [str(p) for p in entry["gt_placeholders"]]
        labels = entry.get("labels")
        if not isinstance(labels, list):
            raise DataError(f"frame {t + 1} has no 'labels' list", file=file, video_id=vid, field="labels")
        for lab in labels:
            if not isinstance(lab, dict) or "box2d" not in lab or "gt_annotation" not in lab:
                missing = "box2d" if not isinstance(lab, dict) or "box2d" not in lab else "gt_annotation"
                raise DataError(f"frame {t + 1}: a label has no {missing!r}", file=file, video_id=vid, field=missing)
            box = lab["box2d"]
            try:
                x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"frame {t + 1}: box2d needs numeric x1, y1, x2, y2 ({e})", file=file,
                                video_id=vid, field="box2d") from e
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise DataError(f"frame {t + 1}: box has a non-finite coordinate {(x1, y1, x2, y2)}", file=file,
                                video_id=vid, field="box2d")
            if x2 < x1 or y2 < y1:
                raise DataError(f"frame {t + 1}: box has x2 < x1 or y2 < y1 {(x1, y1, x2, y2)}", file=file,
                                video_id=vid, field="box2d")
            oid = _object_id(str(lab["gt_annotation"]))
            tracks.setdefault(oid, {})[t] = (x1, y1, x2, y2)
            if "category" in lab:
                categories.setdefault(oid, str(lab["category"]))
    return VideoTracks(vid, tracks, categories, placeholders, n_entries=len(entries))


def load_annotations(path: str | Path, *, strict: bool = True, root: str | Path | None = None) -> AnnotationSet:
    """Read a Something-Else annotation file. strict=False skips a bad video and records its error,
    so one bad video does not stop a large run. `root` (the frames folder) makes `name` checks exact."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"expected an object video_id -> entries, got {type(data).__name__}", file=str(path))
    videos: dict[str, VideoTracks] = {}
    errors: list[DataError] = []
    for vid, entries in data.items():
        try:
            videos[str(vid)] = parse_video(str(vid), entries, file=str(path),
                                           root=Path(root) if root is not None else None)
        except DataError as e:
            if strict:
                raise
            errors.append(e)
    return AnnotationSet(videos, errors, str(path))


def to_something_else(tracks: VideoTracks, gaps: set[int] | None = None) -> list[dict]:
    """VideoTracks -> the real per-frame entry list (frames in `gaps` are left out, as in the real data)."""
    out = []
    gaps = gaps or set()
    for t in tracks.annotated_frames:
        if t in gaps:
            continue
        labels = []
        for o in tracks.object_ids:
            if t in tracks.tracks[o]:
                x1, y1, x2, y2 = tracks.tracks[o][t]
                cat = tracks.categories.get(o, o)
                labels.append({"box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                               "gt_annotation": f"object {o}", "category": cat,
                               "standard_category": HAND if o == HAND else f"{int(o):04d}"})
        out.append({"name": f"{tracks.video_id}/{t + 1:04d}.jpg", "labels": labels,
                    "gt_placeholders": list(tracks.placeholders),
                    "nr_instances": len(tracks.object_ids)})
    return out


def save_annotations(path: str | Path, videos: dict[str, VideoTracks],
                     gaps: dict[str, set[int]] | None = None) -> None:
    gaps = gaps or {}
    atomic_write_json(path, {vid: to_something_else(tr, gaps.get(vid)) for vid, tr in videos.items()}, indent=None)
