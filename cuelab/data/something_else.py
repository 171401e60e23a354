"""Something-Else box annotations -> tracks keyed by object and by frame index.

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

import numpy as np

from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_json, check_video_id, load_json, safe_join

HAND = "hand"
_NAME_RE = re.compile(r"^(?P<dir>[^/\\]+)[/\\](?P<num>\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


@dataclass
class Boxes:
    """Boxes of several objects on one frame, like supervision's Detections: xyxy (n, 4) float32 in
    pixels of the original frame, the object ids ("0", "1", ..., "hand") and free-form per-box data."""

    xyxy: np.ndarray
    object_ids: list[str]
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        if len(self.object_ids) != len(self.xyxy):
            raise ValueError(f"{len(self.xyxy)} boxes but {len(self.object_ids)} object ids")
        if not np.all(np.isfinite(self.xyxy)):
            raise ValueError("box coordinates must be finite")
        if np.any(self.xyxy[:, 2] < self.xyxy[:, 0]) or np.any(self.xyxy[:, 3] < self.xyxy[:, 1]):
            raise ValueError("boxes need x2 >= x1 and y2 >= y1")

    def __len__(self) -> int:
        return len(self.object_ids)

    @classmethod
    def empty(cls) -> "Boxes":
        return cls(np.zeros((0, 4), np.float32), [])

    def get(self, object_id: str) -> np.ndarray | None:
        return self.xyxy[self.object_ids.index(object_id)] if object_id in self.object_ids else None


def object_slot(object_id: str) -> int | None:
    """'0' -> 0, '1' -> 1; the hand has no slot (it is not cued by default)."""
    return int(object_id) if object_id.isdigit() else None


@dataclass
class VideoTracks:
    """All annotated boxes of one video: tracks[object_id][frame_index] = (x1, y1, x2, y2)."""

    video_id: str
    tracks: dict[str, dict[int, tuple[float, float, float, float]]]
    categories: dict[str, str] = field(default_factory=dict)
    placeholders: list[str] = field(default_factory=list)
    n_entries: int = 0
    clipped: int = 0  # boxes clipped to the frame (see clipped_to)
    outside: int = 0  # boxes dropped for having no area inside the frame
    outside_objects: list[str] = field(default_factory=list)  # objects dropped for having no box left

    @property
    def object_ids(self) -> list[str]:
        """Numbered objects in slot order, then the hand."""
        nums = sorted((o for o in self.tracks if o.isdigit()), key=int)
        return nums + [o for o in self.tracks if not o.isdigit()]

    def objects(self, include_hand: bool = False) -> list[str]:
        return [o for o in self.object_ids if include_hand or o != HAND]

    @property
    def last_frame(self) -> int:
        frames = [t for boxes in self.tracks.values() for t in boxes]
        return max(frames) if frames else -1

    @property
    def annotated_frames(self) -> list[int]:
        return sorted({t for boxes in self.tracks.values() for t in boxes})

    def boxes_at(self, t: int, include_hand: bool = False) -> Boxes:
        ids = [o for o in self.objects(include_hand) if t in self.tracks[o]]
        if not ids:
            return Boxes.empty()
        return Boxes(np.array([self.tracks[o][t] for o in ids], np.float32), ids)

    def clipped_to(self, width: int, height: int) -> "VideoTracks":
        """A copy with every box clipped to the frame. A box with no area inside the frame shows nothing of its
        object and is dropped, as Something-Else leaves out an object that has left the frame; an object left
        with no box is dropped too. `clipped` counts the boxes that changed, `outside` those dropped."""
        clipped = outside = 0
        out: dict[str, dict[int, tuple]] = {}
        for o, boxes in self.tracks.items():
            kept = {}
            for t, (x1, y1, x2, y2) in boxes.items():
                c = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
                     min(max(x2, 0.0), width), min(max(y2, 0.0), height))
                if c[2] <= c[0] or c[3] <= c[1]:
                    outside += 1
                    continue
                clipped += c != (x1, y1, x2, y2)
                kept[t] = c
            if kept:
                out[o] = kept
        return VideoTracks(self.video_id, out, dict(self.categories), list(self.placeholders), self.n_entries,
                           self.clipped + clipped, self.outside + outside,
                           self.outside_objects + [o for o in self.tracks if o not in out])


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
