"""The cue library: what is drawn on each frame of a cued video.

Each cue is a small class in the manner of supervision's annotators: style in `__init__`, and one pure method
`annotate(frame, t, tracks) -> frame` (a new RGB uint8 frame; the input is never modified, no state is kept
between calls). `t` is the SOURCE frame index, matched against the frame index of the annotations (never a list
position), so a box annotated on frame 10 is drawn on frame 10 only.

Work that depends only on the video (clipping every box to the frame, line widths, where the controls put their
decoy boxes) is done once by `layout(tracks, width, height)`, itself pure; `draw(frame, t, layout)` then does
the per-frame drawing. `annotate` is exactly `draw(frame, t, layout(tracks, w, h))`; the renderer calls
`layout` once per video for speed.

Colours: one fixed, named colour per object slot (cuelab.video.palette), the same in every cue, so "the red box"
means object 0 in every condition. The hand is skipped unless `include_hand=True`. An object with no box on
frame t gets no box, circle or arrow on frame t; the trajectory shows the path of box centres so far (frames <= t).

Boxes come in as `cuelab.tracks.VideoTracks`, the one validated box container (float pixel boxes, x2/y2
exclusive, by object and source frame). `Mark` stays a separate record on purpose, not a view of it: it is the
cue's drawing of one object, derived once per video (rounded integer boxes clipped to this frame size, x2/y2
inclusive, boxes under half a pixel dropped, a colour, possibly moved off the object by a control), which the
container must not hold, since clipping and rounding depend on the cue's frame and the controls draw boxes no
object has.

`first_study` / `first_study_listpos` are the exceptions, on purpose: they draw what the first study drew, in its
colours (sampled per video with the run's seed), and `first_study_listpos` keeps the study's misalignment
(annotation list position i drawn on frame i) so its effect can be measured.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cv2
import numpy as np

from cuelab.digest import stable_int
from cuelab.errors import DataError
from cuelab.tracks import HAND, VideoTracks
from cuelab.video.palette import HAND_COLOR, slot_color

Color = tuple[int, int, int]
LINE = cv2.LINE_8  # anti-aliased drawing costs 5-10x more and the codec softens edges anyway
SHIFT = 16  # fractional bits of sub-pixel polygon vertices (as cv2.ellipse draws)
SUBPIXEL = 1 << SHIFT
TARGET = "0"  # the questions' main target: the first placeholder is annotated as "object 0"


@dataclass(frozen=True)
class Mark:
    """One object's boxes as drawn: integer pixel boxes (x1, y1, x2, y2) inside the frame, by frame index."""

    object_id: str
    color: Color
    frames: np.ndarray  # (N,) int, sorted source frame indices that have a box
    boxes: np.ndarray  # (N, 4) int32, clipped to the frame, x2/y2 the last pixel column/row inside the box
    row: dict[int, int] = field(default_factory=dict)  # frame index -> row of `boxes`

    @classmethod
    def build(cls, object_id: str, color: Color, frame_boxes: dict[int, tuple], width: int, height: int) -> "Mark":
        """Boxes in original-frame pixels (x2, y2 exclusive) -> drawable integer boxes; boxes wholly outside
        the frame are dropped (nothing of the object is visible)."""
        frames = np.array(sorted(frame_boxes), np.int64)
        raw = np.array([frame_boxes[t] for t in frames.tolist()], np.float64).reshape(-1, 4)
        c = np.clip(raw, 0.0, np.array([width, height, width, height], np.float64))
        keep = (c[:, 2] - c[:, 0] >= 0.5) & (c[:, 3] - c[:, 1] >= 0.5)
        r = np.round(c[keep])  # half to even, as Python's round()
        arr = np.stack([r[:, 0], r[:, 1], np.maximum(r[:, 2] - 1, r[:, 0]), np.maximum(r[:, 3] - 1, r[:, 1])],
                       1).astype(np.int32).reshape(-1, 4)
        frames = frames[keep]
        return cls(object_id, color, frames, arr, {t: i for i, t in enumerate(frames.tolist())})

    def at(self, t: int) -> np.ndarray | None:
        i = self.row.get(t)
        return None if i is None else self.boxes[i]

    def nearest(self, t: int) -> np.ndarray | None:
        """The box of frame t, or inside an annotation gap (between the object's first and last box) the box
        of the nearest annotated frame (the earlier one on a tie); None outside that span."""
        if not len(self.frames) or t < self.frames[0] or t > self.frames[-1]:
            return None
        i = self.row.get(t)
        if i is not None:
            return self.boxes[i]
        k = int(np.searchsorted(self.frames, t))
        return self.boxes[k - 1] if t - self.frames[k - 1] <= self.frames[k] - t else self.boxes[k]

    def centres(self) -> np.ndarray:
        """(N, 2) int32 box centres."""
        return np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) // 2, (self.boxes[:, 1] + self.boxes[:, 3]) // 2], 1)


@dataclass(frozen=True)
class Layout:
    """Everything a cue needs for one video, computed once from (tracks, frame size)."""

    width: int
    height: int
    thickness: int
    marks: tuple[Mark, ...]
    extra: dict = field(default_factory=dict)


def object_color(object_id: str, order: int) -> Color:
    """Slot colour of an object: '0' -> slot 0 (red), '1' -> slot 1 (blue), ...; the hand is white."""
    if object_id == HAND:
        return HAND_COLOR[1]
    return slot_color(int(object_id) if object_id.isdigit() else order)


class Cue:
    """Base cue: `plain` (the frame unchanged, still re-encoded by the renderer like every condition)."""

    name = "plain"

    def __init__(self, *, include_hand: bool = False, thickness: int | None = None, thickness_per_px: float = 1 / 80):
        """thickness: line width in pixels; None scales it with the frame (min(h, w) * thickness_per_px, at
        least 2 so the colour survives yuv420p's half-resolution chroma)."""
        self.include_hand = include_hand
        self.thickness = thickness
        self.thickness_per_px = thickness_per_px

    def __repr__(self) -> str:
        return f"{type(self).__name__}(include_hand={self.include_hand}, thickness={self.thickness})"

    # -- video level ------------------------------------------------------------------------------------------
    def line_width(self, width: int, height: int) -> int:
        return self.thickness if self.thickness else max(2, int(round(min(width, height) * self.thickness_per_px)))

    def marks(self, tracks: VideoTracks, width: int, height: int) -> list[Mark]:
        """The boxes to draw: every annotated object (the hand only when include_hand), in its slot colour."""
        objs = tracks.objects(self.include_hand)
        return [Mark.build(o, object_color(o, k), tracks.tracks[o], width, height) for k, o in enumerate(objs)]

    def layout(self, tracks: VideoTracks, width: int, height: int) -> Layout:
        marks = () if type(self) is Cue else tuple(self.marks(tracks, width, height))  # plain draws nothing
        return Layout(width, height, self.line_width(width, height), marks)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    # -- frame level ------------------------------------------------------------------------------------------
    def draw(self, frame: np.ndarray, t: int, layout: Layout) -> np.ndarray:
        return frame.copy()

    def annotate(self, frame: np.ndarray, t: int, tracks: VideoTracks) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB, t its source frame index -> a new cued frame."""
        h, w = frame.shape[:2]
        return self.draw(frame, t, self.layout(tracks, w, h))


def _base_style(style: dict) -> dict:
    """The style options every cue takes (a wrapper passes the rest on to its inner cue)."""
    return {k: style[k] for k in ("include_hand", "thickness", "thickness_per_px") if k in style}


class BoxCue(Cue):
    name = "box"

    def draw(self, frame, t, layout):
        out = frame.copy()
        draw_boxes(out, t, layout)
        return out


def draw_boxes(out: np.ndarray, t: int, layout: Layout) -> None:
    for m in layout.marks:
        b = m.at(t)
        if b is not None:
            cv2.rectangle(out, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), m.color, layout.thickness)


def draw_paths(out: np.ndarray, t: int, layout: Layout) -> None:
    """Box centres of frames <= t joined by a line; a dot marks the current centre when there is a box on t."""
    for m in layout.marks:
        k = int(np.searchsorted(m.frames, t, side="right"))
        if k == 0:
            continue
        pts = layout.extra["centres"][m.object_id][:k]
        if k > 1:
            cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, m.color, max(1, layout.thickness // 2 + 1),
                          LINE)
        if m.frames[k - 1] == t or k == 1:
            cv2.circle(out, (int(pts[-1, 0]), int(pts[-1, 1])), layout.thickness + 1, m.color, -1, LINE)


class TrajectoryCue(Cue):
    name = "trajectory"

    def layout(self, tracks, width, height):
        base = super().layout(tracks, width, height)
        return _with_centres(base)

    def draw(self, frame, t, layout):
        out = frame.copy()
        draw_paths(out, t, layout)
        return out


def _with_centres(layout: Layout) -> Layout:
    extra = dict(layout.extra, centres={m.object_id: m.centres() for m in layout.marks})
    return Layout(layout.width, layout.height, layout.thickness, layout.marks, extra)


class BoxTrajectoryCue(TrajectoryCue):
    name = "box_trajectory"

    def draw(self, frame, t, layout):
        out = frame.copy()
        draw_paths(out, t, layout)
        draw_boxes(out, t, layout)
        return out


class _RegionCue(Cue):
    """Keeps the boxes' pixels as they are and changes the rest of the frame; a thin outline in the slot colour
    keeps "the object in the red box" answerable under this cue too (outline=False leaves it out).
    Inside an annotation gap the lit region stays at the object's nearest annotated box (no outline is drawn
    there): switching the whole frame between dimmed and clean at every missing annotation would flicker,
    a signal of its own, and it made the encoder's work 30-50% larger on clips with gaps."""

    def __init__(self, *, outline: bool = True, **style):
        super().__init__(**style)
        self.outline = outline

    def background(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def draw(self, frame, t, layout):
        regions = [b for m in layout.marks if (b := m.nearest(t)) is not None]
        if not regions:
            return frame.copy()  # before the first or after the last box: nothing to single out
        out = self.background(frame)
        for x1, y1, x2, y2 in regions:
            out[y1:y2 + 1, x1:x2 + 1] = frame[y1:y2 + 1, x1:x2 + 1]
        if self.outline:
            draw_boxes(out, t, layout)
        return out


class SpotlightCue(_RegionCue):
    name = "spotlight"

    def __init__(self, *, dim: float = 0.35, **style):
        super().__init__(**style)
        self.dim = dim

    def background(self, frame):
        return cv2.convertScaleAbs(frame, alpha=self.dim)


class BlurOutsideCue(_RegionCue):
    """Everything outside the boxes blurred. A box filter (cv2.blur, cost independent of its size) rather than
    cv2.GaussianBlur, which alone cost more than decoding and encoding the frame (see benchmarks/RESULTS.md)."""

    name = "blur_outside"

    def __init__(self, *, ksize_per_px: float = 1 / 8, **style):
        super().__init__(**style)
        self.ksize_per_px = ksize_per_px

    def background(self, frame):
        h, w = frame.shape[:2]
        k = max(3, int(min(h, w) * self.ksize_per_px) | 1)
        return cv2.blur(frame, (k, k))


class CircleCue(Cue):
    """An ellipse through the box corners (a true circle around a long object would cover half the frame)."""

    name = "circle"

    def layout(self, tracks, width, height):
        base = super().layout(tracks, width, height)
        rings = {m.object_id: ellipse_polygons(m.boxes) for m in base.marks}  # computed once per video
        return Layout(base.width, base.height, base.thickness, base.marks, dict(base.extra, rings=rings))

    def draw(self, frame, t, layout):
        out = frame.copy()
        for m in layout.marks:
            i = m.row.get(t)
            if i is not None:
                cv2.polylines(out, [layout.extra["rings"][m.object_id][i]], False, m.color, layout.thickness, LINE,
                              shift=SHIFT)
        return out


_STEPS = (30, 20, 15, 10, 5)  # degrees
_UNIT = {d: np.stack([np.cos(np.deg2rad(np.arange(0, 361, d))), np.sin(np.deg2rad(np.arange(0, 361, d)))], 1)
         for d in _STEPS}


def ellipse_polygons(boxes: np.ndarray) -> list[np.ndarray]:
    """For each box (x1, y1, x2, y2) of one object, the ellipse through its corners as a closed polygon in
    OpenCV's 16-bit sub-pixel coordinates (draw with shift=SHIFT). One angular step for the object, the largest
    whose chords stay within a quarter pixel of its largest ellipse: cv2.ellipse steps 5 degrees from a radius
    of 15 px, and a thick polyline costs per vertex; at the sizes cues have this draws a third as many
    vertices, indistinguishable by eye."""
    b = boxes.astype(np.float64).reshape(-1, 4)
    if not len(b):
        return []
    centre = np.round(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1))
    axes = np.maximum(1, np.round(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1) / 2 * np.sqrt(2)))
    r = float(axes.max())
    step = next((d for d in _STEPS[:-1] if r * (1 - np.cos(np.deg2rad(d / 2))) <= 0.25), _STEPS[-1])
    pts = centre[:, None, :] + axes[:, None, :] * _UNIT[step][None]  # (B, K, 2)
    return list(np.round(pts * SUBPIXEL).astype(np.int32)[:, :, None, :])


class ArrowCue(Cue):
    """An arrow from above-left whose tip touches the top edge of the box (from below when there is no room
    above), so it points at the object without covering it."""

    name = "arrow"

    def __init__(self, *, length_per_px: float = 0.25, **style):
        super().__init__(**style)
        self.length_per_px = length_per_px

    def layout(self, tracks, width, height):
        base = super().layout(tracks, width, height)
        length = max(8.0, min(width, height) * self.length_per_px)
        arrows = {}  # per mark, per box row: (start, tip, tip length) or None (computed once per video)
        for m in base.marks:
            rows = []
            for x1, y1, x2, y2 in m.boxes.tolist():
                cx = (x1 + x2) // 2
                if y1 >= 0.5 * length:  # room above: come down onto the top edge
                    tip, start = (cx, y1), (cx - length * 0.5, y1 - length)
                else:
                    tip, start = (cx, y2), (cx - length * 0.5, y2 + length)
                start = (int(min(max(start[0], 0), width - 1)), int(min(max(start[1], 0), height - 1)))
                seg = float(np.hypot(start[0] - tip[0], start[1] - tip[1]))
                rows.append(None if seg < 1 else (start, tip, min(0.5, (3 * base.thickness + 3) / seg)))
            arrows[m.object_id] = rows
        return Layout(base.width, base.height, base.thickness, base.marks, dict(base.extra, arrows=arrows))

    def draw(self, frame, t, layout):
        out = frame.copy()
        for m in layout.marks:
            i = m.row.get(t)
            arrow = None if i is None else layout.extra["arrows"][m.object_id][i]
            if arrow is not None:
                start, tip, tip_length = arrow
                cv2.arrowedLine(out, start, tip, m.color, layout.thickness, LINE, tipLength=tip_length)
        return out


class SideBySideCue(Cue):
    """The clean frame on the left, the cued frame (inner cue, `box` by default) on the right: the cue hides no
    pixel. The output is twice as wide."""

    name = "side_by_side"

    def __init__(self, *, inner: str = "box", **style):
        super().__init__(**_base_style(style))
        if inner == self.name:
            raise DataError("side_by_side cannot hold itself", field="inner")
        self.inner = get_cue(inner, **style)

    def layout(self, tracks, width, height):
        return self.inner.layout(tracks, width, height)

    def output_size(self, width, height):
        return 2 * width, height

    def draw(self, frame, t, layout):
        return np.concatenate([frame, self.inner.draw(frame, t, layout)], axis=1)


# ---------------------------------------------------------------------------------------------------------------
# The first study's cue, drawn as its code drew it (github 4g/visual_cues, annotate.py: annotate_video).
# ---------------------------------------------------------------------------------------------------------------

STUDY_COLORS: tuple[Color, ...] = ((255, 64, 64), (0, 0, 255), (127, 255, 0), (255, 97, 3), (220, 20, 60),
                                   (255, 185, 15), (255, 20, 147), (255, 105, 180), (60, 179, 113))
FRAME_FROM = ("name", "list_position")


@dataclass(frozen=True)
class StudyTrack:
    """One object as the study drew it: boxes and box centres truncated to int (not clipped or rounded; OpenCV
    clips while drawing), by the frame they are drawn on."""

    object_id: str
    color: Color
    boxes: tuple[tuple[int, int, int, int], ...]
    centres: tuple[tuple[int, int], ...]
    row: dict[int, int]  # drawn-on frame -> index into boxes/centres (in frame order)


class FirstStudyCue(Cue):
    """What the study drew: on each frame where an object has a box, a 2 px box, and the object's earlier box
    centres as radius-2 dots joined by a 1 px line; nothing on frames without its box. Colours: a sample of the
    study's 9-colour list per video, one per annotated object (hand included, though the hand is not drawn),
    from a seeded RNG (run seed + video id), so the same seed gives the same pixels.

    frame_from: "name" draws annotation of frame n on decoded frame n (the annotation's `name`);
    "list_position" reproduces the study: the i-th annotated frame (its name-sorted list) is drawn on decoded
    frame i, which misplaces every drawing after a gap or when the list does not start at frame 1."""

    name = "first_study"
    default_frame_from = "name"

    def __init__(self, *, frame_from: str | None = None, seed: int = 0, include_hand: bool = False):
        super().__init__(include_hand=include_hand, thickness=2)
        frame_from = frame_from or self.default_frame_from
        if frame_from not in FRAME_FROM:
            raise DataError(f"frame_from must be one of {FRAME_FROM}, got {frame_from!r}", field="frame_from")
        self.frame_from, self.seed = frame_from, int(seed)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(frame_from={self.frame_from!r}, seed={self.seed}, "
                f"include_hand={self.include_hand})")

    def colors(self, tracks: VideoTracks) -> dict[str, Color]:
        """Object id -> colour, dealt in the order objects first appear in the annotation (the study's order)."""
        ids = list(tracks.tracks)
        if len(ids) > len(STUDY_COLORS):
            raise DataError(f"{len(ids)} annotated objects, but the study's cue has {len(STUDY_COLORS)} colours",
                            video_id=tracks.video_id, field="gt_annotation")
        rng = random.Random(stable_int("first_study colours", self.seed, tracks.video_id))
        return dict(zip(ids, rng.sample(STUDY_COLORS, len(ids))))

    def drawn_on(self, tracks: VideoTracks) -> dict[int, int]:
        """Annotated frame index -> the decoded frame its drawing goes on."""
        frames = tracks.annotated_frames
        if self.frame_from == "name":
            return {t: t for t in frames}
        if tracks.n_entries and tracks.n_entries != len(frames):
            # entries without a box (or two entries for one frame) hold list positions the tracks do not keep
            raise DataError(f"{tracks.n_entries} annotation entries but {len(frames)} annotated frames: list "
                            "positions cannot be recovered", video_id=tracks.video_id, field="name")
        return {t: i for i, t in enumerate(frames)}

    def layout(self, tracks, width, height):
        colors, where = self.colors(tracks), self.drawn_on(tracks)
        plan = []
        for o, boxes in tracks.tracks.items():
            if o == HAND and not self.include_hand:
                continue
            items = sorted((where[t], b) for t, b in boxes.items())
            plan.append(StudyTrack(
                o, colors[o], tuple(tuple(int(v) for v in b) for _, b in items),
                tuple((int((b[0] + b[2]) * 0.5), int((b[1] + b[3]) * 0.5)) for _, b in items),
                {f: i for i, (f, _) in enumerate(items)}))
        return Layout(width, height, 2, (), {"first_study": tuple(plan)})

    def draw(self, frame, t, layout):
        out = frame.copy()
        for tr in layout.extra["first_study"]:
            i = tr.row.get(t)
            if i is None:
                continue
            x1, y1, x2, y2 = tr.boxes[i]
            cv2.rectangle(out, (x1, y1), (x2, y2), tr.color, 2)
            prev = None
            for c in tr.centres[:i]:
                cv2.circle(out, c, 2, tr.color, -1)
                if prev is not None and prev[0]:  # the study tested `if prevx:`, so no line from a centre at x == 0
                    cv2.line(out, c, prev, tr.color, 1)
                prev = c
        return out


class FirstStudyListPositionCue(FirstStudyCue):
    """`first_study` with the study's frame alignment (annotation i on decoded frame i): its own name, so both
    can be rendered in one run (outputs are kept per cue name) and compared."""

    name = "first_study_listpos"
    default_frame_from = "list_position"


# ---------------------------------------------------------------------------------------------------------------
# Controls: the same drawing, on the wrong place.
# ---------------------------------------------------------------------------------------------------------------

def _overlap_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of boxes a (..., 4) and b (..., 4), broadcast."""
    w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    return w * h


def decoy_offset(own: dict[int, tuple], tracks: VideoTracks, width: int, height: int, gap: float) -> tuple[int, int]:
    """One offset (dx, dy) for a whole video that moves an object's boxes off every annotated object (hand
    included) and keeps them in the frame as far as possible. Boxes covering more than half the frame (a table,
    a mat: surfaces everything else lies on) do not count as occupied, or nothing could ever be off them.
    Candidates are steps of one box size (plus a gap) in 8 directions, then two and three steps; the score is
    4 x the area on objects + the area outside the frame, and a candidate leaving less than half of the box
    visible is taken only when no other exists (a cue moved out of the frame would be no cue at all).
    Ties go to the earliest candidate, so the choice is deterministic."""
    frames = sorted(own)
    if not frames:
        return 0, 0
    boxes = np.array([own[t] for t in frames], np.float64)  # (N, 4)
    size = np.median(boxes[:, 2:] - boxes[:, :2], axis=0) + gap  # (w, h)
    none = (0.0, 0.0, 0.0, 0.0)  # zero area: overlaps nothing
    occ = np.array([[tr.get(t, none) for tr in tracks.tracks.values()] for t in frames],
                   np.float64).reshape(len(frames), -1, 4)  # (N, M, 4): every object's box on each frame
    occ[(occ[..., 2] - occ[..., 0]) * (occ[..., 3] - occ[..., 1]) > 0.5 * width * height] = 0.0
    dirs = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)], np.float64)
    steps = np.concatenate([dirs, 2 * dirs, 3 * dirs]) * size  # (C, 2)
    moved = boxes[None] + np.concatenate([steps, steps], 1)[:, None, :]  # (C, N, 4)
    on_objects = _overlap_area(moved[:, :, None, :], occ[None]).sum(axis=(1, 2))
    area = (moved[..., 2] - moved[..., 0]) * (moved[..., 3] - moved[..., 1])
    inside = _overlap_area(moved, np.array([0, 0, width, height], np.float64)).sum(axis=1)
    outside = area.sum(axis=1) - inside
    hidden = inside < 0.5 * area.sum(axis=1)
    score = 4 * on_objects + outside + hidden * 1e3 * width * height * len(frames)
    best = int(np.argmin(score))  # argmin: the first of equal scores
    return int(round(steps[best, 0])), int(round(steps[best, 1]))


def _shift(boxes: dict[int, tuple], dx: int, dy: int) -> dict[int, tuple]:
    return {t: (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy) for t, b in boxes.items()}


class _ControlCue(Cue):
    """Draws the inner cue's marks (box by default) at other places; subclasses say where."""

    def __init__(self, *, inner: str = "box", **style):
        super().__init__(**_base_style(style))
        # the first study's cue draws from its own layout, not from the marks a control moves
        if inner in CONTROLS or inner in ("plain", "side_by_side") or issubclass(CUES.get(inner, Cue), FirstStudyCue):
            raise DataError(f"control {self.name} needs a drawing cue inside, not {inner!r}", field="inner")
        self.inner = get_cue(inner, **style)

    def layout(self, tracks, width, height):
        marks = tuple(self.control_marks(tracks, width, height))
        lay = Layout(width, height, self.inner.line_width(width, height), marks)
        return _with_centres(lay)

    def draw(self, frame, t, layout):
        return self.inner.draw(frame, t, layout)


class WrongObjectCue(_ControlCue):
    """The cue on objects the question is not about. The questions' target is object "0" (the first
    placeholder): the other annotated objects get the cue, in slot colours re-dealt from slot 0 (so the
    video has a red box, as a `box` video does, but never on the target). A video with one object gets a
    same-size red box that follows the object's motion at a place with no object (see decoy_offset)."""

    name = "wrong_object"

    def control_marks(self, tracks, width, height):
        others = [o for o in tracks.objects(self.include_hand) if o != TARGET]
        if others:
            return [Mark.build(o, object_color(str(k), k), tracks.tracks[o], width, height)
                    for k, o in enumerate(others)]
        if TARGET not in tracks.tracks:
            return []
        own = tracks.tracks[TARGET]
        dx, dy = decoy_offset(own, tracks, width, height, gap=2 * self.line_width(width, height))
        return [Mark.build(TARGET, object_color(TARGET, 0), _shift(own, dx, dy), width, height)]


class ShiftedCue(_ControlCue):
    """The cue of every object displaced by a fixed per-object, per-video offset that puts it off every
    object (see decoy_offset); colours as in the ordinary cue."""

    name = "shifted"

    def control_marks(self, tracks, width, height):
        gap = 2 * self.line_width(width, height)
        # decoys placed so far count as occupied too, so two shifted cues never land on the same spot
        occupied = VideoTracks(tracks.video_id, dict(tracks.tracks))
        out = []
        for k, o in enumerate(tracks.objects(self.include_hand)):
            dx, dy = decoy_offset(tracks.tracks[o], occupied, width, height, gap)
            moved = _shift(tracks.tracks[o], dx, dy)
            occupied.tracks[f"decoy {o}"] = moved
            out.append(Mark.build(o, object_color(o, k), moved, width, height))
        return out


CUES: dict[str, type[Cue]] = {c.name: c for c in (Cue, BoxCue, TrajectoryCue, BoxTrajectoryCue, SpotlightCue,
                                                   BlurOutsideCue, CircleCue, ArrowCue, SideBySideCue,
                                                   WrongObjectCue, ShiftedCue, FirstStudyCue,
                                                   FirstStudyListPositionCue)}
#: cues that mark the wrong place on purpose (what a cue effect is compared with): every _ControlCue
CONTROLS = tuple(name for name, cls in CUES.items() if issubclass(cls, _ControlCue))


def get_cue(name: str, **style) -> Cue:
    """A cue by registered name with its style options (include_hand, thickness, inner, ...)."""
    if name not in CUES:
        raise DataError(f"unknown cue {name!r}; known cues: {', '.join(CUES)}", field="cue")
    try:
        return CUES[name](**style)
    except TypeError as e:
        raise DataError(f"cue {name!r}: bad style option ({e})", field="cue") from e
