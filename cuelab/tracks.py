"""The tracks container: every annotated box of one video, validated, in a core module.

`VideoTracks` is the one box container of cuelab, as supervision's `Detections` is of supervision: readers
(`cuelab.data.something_else`, the synthetic generator) build it, and the cues, the renderer, the questions, the
attention analysis and the report read it. It imports nothing from `cuelab.data` or `cuelab.video`, so both may
import it. `tracks[object_id][frame_index] = (x1, y1, x2, y2)` in pixels of the original frame (x2, y2
exclusive); the frame index is the SOURCE frame index (never a list position). Object ids are "0", "1", ...
(the label's placeholder slots) and "hand".

Validated on construction (a ValueError, a DataError naming the video): object ids are strings, frame indices
integers >= 0, coordinates four finite numbers with x2 >= x1 and y2 >= y1. Coordinates are kept as given (int
or float), so a writer writes back what a reader read. `Boxes` is one frame's view of it (`boxes_at`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from cuelab.errors import DataError

HAND = "hand"


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


def check_track(video_id: str, object_id: object, boxes: object) -> None:
    """One object's boxes: a str id, {frame int >= 0: (x1, y1, x2, y2)} finite with x2 >= x1, y2 >= y1."""
    if not isinstance(object_id, str):
        raise DataError(f"object id {object_id!r} is not a string", video_id=video_id, field="tracks")
    if not isinstance(boxes, dict):
        raise DataError(f"object {object_id}: boxes must be a dict frame -> box, got {type(boxes).__name__}",
                        video_id=video_id, field="tracks")
    if not boxes:
        return
    for t in boxes:
        if not isinstance(t, Integral) or isinstance(t, bool) or t < 0:
            raise DataError(f"object {object_id}: frame index {t!r} is not an integer >= 0", video_id=video_id,
                            field="tracks")
    try:
        arr = np.array([tuple(b) for b in boxes.values()], np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"object {object_id}: a box is not four numbers ({e})", video_id=video_id,
                        field="tracks") from e
    if arr.shape != (len(boxes), 4):
        raise DataError(f"object {object_id}: a box is not four numbers (x1, y1, x2, y2)", video_id=video_id,
                        field="tracks")
    bad = ~np.isfinite(arr).all(axis=1) | (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        t = list(boxes)[int(np.argmax(bad))]
        raise DataError(f"object {object_id}, frame {t}: box {tuple(boxes[t])} is not finite with x2 >= x1 and "
                        f"y2 >= y1", video_id=video_id, field="tracks")


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

    def __post_init__(self):
        if not isinstance(self.tracks, dict):
            raise DataError(f"tracks must be a dict object id -> boxes, got {type(self.tracks).__name__}",
                            video_id=self.video_id, field="tracks")
        for o, boxes in self.tracks.items():
            check_track(self.video_id, o, boxes)

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
