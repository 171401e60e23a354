"""The embedded synthetic dataset, written in the real formats through the same writers the readers read back:
`labels.json` (SSv2 label entries), `annotations.json` (Something-Else boxes, with `object hand`) and
`videos/<id>.mp4` (H.264, 12 fps by default, 2-4 s, 160x120 by default).

Scenes hold 2-4 objects named colour x shape ("orange cube", "pink ball"); one object (the acted-on one) moves
with a hand, the others stay still or drift slightly, so "the object that moves" is not always the answer.
Templates come in shape groups (same words around the verb), so verb questions have same-shape distractors:
in-place verbs ("Spinning [something]"), and manner x path verbs ("Pulling [something] closer to [something]").

Two-actor scenes (`two_actor_fraction` > 0): that share of the multi-object scenes gets a second actor, another
object of the scene (not the partner of a two-slot template) doing a different in-place verb at the same time as
the labelled action, drawn by the same motion code, with its own hand (the hand is drawn, not annotated: the
`hand` track stays the labelled actor's). The label stays the first actor's action, so only a cue says which
motion a `referential_verb` question asks about. Those draws come from a second generator seeded by
(seed, index, 2), drawn only when the share is above 0, so the default writes the same bytes as before. The
per-object actions go to a side file, `actions.json`, written (atomically, like the others) only when the share
is above 0: {video id: {object id: verb phrase}} for every video with two actors, object ids as in
annotations.json ("0", "2"), verb phrases as the verb question phrases them ("spinning", "pushing"); both actors
are listed (the labelled one with its template's verb). A scene whose objects all belong to the template gets no
second actor.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cuelab.config import SyntheticConfig
from cuelab.data.something_else import save_annotations
from cuelab.data.ssv2 import LabelEntry, save_labels
from cuelab.fsutil import atomic_write_json
from cuelab.tracks import HAND, VideoTracks
from cuelab.video.io import write_video
from cuelab.vocabulary import COLORS, IN_PLACE, OBJECT_NAMES, Template, all_templates

SKIN = (225, 180, 150)


# ---------------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------------

def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float, sx: float, sy: float) -> np.ndarray:
    if shape == "cube":
        base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * 0.85
    elif shape == "triangle":
        base = np.array([[0, -1.05], [1, 0.8], [-1, 0.8]], np.float32)
    else:  # ball / ring: a polygonal circle so rotation and squash apply uniformly
        a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        base = np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    rot = base @ np.array([[c, s], [-s, c]], np.float32)
    return np.stack([cx + rot[:, 0] * r * sx, cy + rot[:, 1] * r * sy], 1)


def _draw_object(img: np.ndarray, o: SceneObject, pose: Pose) -> tuple:
    """Draw `o` at `pose`; returns its box (x1, y1, x2, y2)."""
    cx, cy, r, angle, sx, sy, flip = pose.cx, pose.cy, o.r, pose.angle, pose.sx, pose.sy, pose.flip
    pts = _shape_points(o.shape, cx, cy, r, angle + (math.pi if flip else 0.0), sx, sy)
    ipts = np.round(pts * 16).astype(np.int32)  # 4 fractional bits: sub-pixel motion stays visible
    dark = tuple(int(v * 0.55) for v in o.color)
    if o.shape == "ring":
        cv2.polylines(img, [ipts], True, o.color, max(2, int(r * 0.45)), cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(img, [ipts], o.color, cv2.LINE_AA, shift=4)
        cv2.polylines(img, [ipts], True, dark, 1, cv2.LINE_AA, shift=4)
    # a stripe through the centre makes rotation and flips visible
    c, s = math.cos(angle + (math.pi if flip else 0)), math.sin(angle + (math.pi if flip else 0))
    p1 = (cx - c * r * 0.6 * sx, cy - s * r * 0.6 * sy)
    p2 = (cx + c * r * 0.1 * sx, cy + s * r * 0.1 * sy)
    cv2.line(img, tuple(int(v * 16) for v in p1), tuple(int(v * 16) for v in p2), dark, 2, cv2.LINE_AA, shift=4)
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    return float(x1), float(y1), float(x2), float(y2)


def _draw_hand(img: np.ndarray, cx: float, cy: float, r: float) -> tuple:
    w, h = r * 1.1, r * 0.8
    x1, y1, x2, y2 = cx - w, cy - h, cx + w, cy + h
    cv2.rectangle(img, (int(x1 * 16), int(y1 * 16)), (int(x2 * 16), int(y2 * 16)), SKIN, -1, cv2.LINE_AA, shift=4)
    for k in range(3):  # fingers
        fx = x1 + (k + 0.5) * (x2 - x1) / 3
        cv2.line(img, (int(fx * 16), int(y1 * 16)), (int(fx * 16), int((y1 - r * 0.5) * 16)), SKIN,
                 max(1, int(r * 0.3)), cv2.LINE_AA, shift=4)
    return float(x1), float(y1 - r * 0.5), float(x2), float(y2)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = rng.integers(150, 200, size=3)
    yy = np.linspace(0, 1, h)[:, None, None]
    img = base[None, None, :] * (0.9 + 0.15 * yy) + rng.normal(0, 4, size=(h, w, 1))
    # a table edge line, for a sense of place
    img[int(h * 0.18):int(h * 0.18) + 1] *= 0.8
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Scenes and motions
# ---------------------------------------------------------------------------------------------------------------

def _ease(p: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * min(max(p, 0.0), 1.0))


@dataclass
class SceneObject:
    name: str
    shape: str
    color: tuple
    x: float
    y: float
    r: float


@dataclass
class Pose:
    """How an object is drawn on one frame: centre, rotation, squash (sx, sy) and a half turn (`flip`); for the
    acted-on object also where the hand is, as an offset from the centre in object radii (None: no hand)."""

    cx: float
    cy: float
    angle: float = 0.0
    sx: float = 1.0
    sy: float = 1.0
    flip: bool = False
    hand: tuple[float, float] | None = None


@dataclass
class _Staging:
    """A scene laid out: the template acted out, the objects in slot order, the acted-on object (`actor`) and
    the one it moves relative to (`partner`; None in one-object scenes), the actor's start and end points, the
    drift of the objects that stay (id -> (dx, dy) over the action), the in-place motions' amplitude and, in a
    two-actor scene, the second actor's own staging (`second`: its in-place template, object, start and end)."""

    tpl: Template
    objects: list[SceneObject]
    actor: SceneObject
    partner: SceneObject | None
    start: tuple[float, float]
    end: tuple[float, float]
    drift: dict[int, tuple[float, float]]
    motion: float
    second: _Staging | None = None

    def slot(self, o: SceneObject) -> str:
        return str(next(k for k, x in enumerate(self.objects) if x is o))


def _state(st: _Staging, p: float) -> Pose:
    """Pose of the acted-on object at progress p (0: the action starts, 1: it ends)."""
    start, end = st.start, st.end
    q = _ease(p)
    pose = Pose(start[0] + (end[0] - start[0]) * q, start[1] + (end[1] - start[1]) * q, hand=(0.0, -1.6))
    if st.tpl.path == "in_place":
        _in_place_motion(st, p, pose)
    else:
        _path_motion(st, p, pose)
    if st.tpl.path == "drop_into":
        pose.hand = (0.0, -1.6) if p < 0.1 else None
        pose.sx = pose.sy = 1.0 - 0.5 * q
    if st.tpl.path == "cover":  # the cover spreads over what it covers
        pose.sx = pose.sy = 1.0 + 0.35 * _ease(p)
    return pose


def _in_place_motion(st: _Staging, p: float, pose: Pose) -> None:
    """The verbs that leave the object where it is (or move it straight up or down), on `pose` in place;
    `st.motion` scales the amplitude of shake, poke and squeeze."""
    start, end, a, motion, v = st.start, st.end, st.actor, st.motion, st.tpl.verb
    q = _ease(p)
    moving = 0.0 < p < 1.0
    if v == "lifting":
        pose.hand = (0.0, -1.6)
    elif v == "dropping":
        q2 = min(max(p, 0), 1) ** 2  # falls, accelerating, from where the hand held it
        pose.cx, pose.cy = start[0], start[1] + (end[1] - start[1]) * q2
        pose.hand = (0.0, -1.6) if p <= 0.05 else None
    elif v == "spinning":
        pose.angle = 2.0 * math.pi * q * 1.5
        pose.hand = (0.0, -1.6) if p < 0.15 else None
    elif v == "shaking":
        # 1.5 back-and-forths: faster shaking aliases away at the 2 fps a video model samples
        pose.cx = start[0] + math.sin(p * 3 * math.pi) * a.r * 0.9 * motion * (1.0 if moving else 0.0)
    elif v == "poking":
        pose.hand = (-1.6 - 1.2 * math.cos(math.pi * 2 * min(p, 1.0)) * (1.0 if moving else 0.0), 0.0)
        pose.cx = start[0] + a.r * 0.4 * motion * _ease(max(0.0, (p - 0.5) * 2))
    elif v == "squeezing":
        s = 1.0 - min(0.75, 0.45 * motion) * math.sin(math.pi * min(max(p, 0.0), 1.0))
        pose.sy, pose.sx = s, 1.0 + (1.0 - s) * 0.5
        pose.hand = (0.0, -0.6 - 1.0 * s)


def _path_motion(st: _Staging, p: float, pose: Pose) -> None:
    """The verbs that move the object along its path (manner x path), on `pose` in place."""
    start, end, a, v = st.start, st.end, st.actor, st.tpl.verb
    q = _ease(p)
    dx, dy = end[0] - start[0], end[1] - start[1]
    n = math.hypot(dx, dy) or 1.0
    ux, uy = dx / n, dy / n
    if v == "pushing":
        pose.hand = (-ux * 1.7, -uy * 1.7)
    elif v == "pulling":
        pose.hand = (ux * 1.7, uy * 1.7)
    elif v == "rolling":
        pose.angle = (n * q) / max(a.r, 1.0) * (1 if ux >= 0 else -1)
        pose.hand = (-ux * 1.7, -uy * 1.7) if p < 0.2 else None
    elif v == "moving":
        pose.cy -= a.r * 0.5 * math.sin(math.pi * min(max(p, 0), 1))  # carried: lifted off the table
        pose.hand = (0.0, -1.6)
    elif v == "putting":
        pose.cy -= a.r * 0.8 * math.sin(math.pi * min(max(p, 0), 1))
    elif v == "turning":
        pose.flip = q > 0.5
        pose.sy = abs(math.cos(math.pi * q)) * 0.9 + 0.1


def _plan(tpl: Template, objs: list[SceneObject], w: int, h: int, rng: np.random.Generator):
    """Start and end points of the acted-on object; may move the other objects to make room."""
    a = objs[0] if tpl.path != "cover" else objs[1]
    b = (objs[1] if tpl.path != "cover" else objs[0]) if len(objs) > 1 else None  # single-object scenes
    if tpl.path == "in_place":
        if tpl.verb == "lifting":
            a.y = h * rng.uniform(0.62, 0.75)
            return (a.x, a.y), (a.x, a.y - h * 0.38)
        if tpl.verb == "dropping":
            a.y = h * rng.uniform(0.28, 0.36)
            return (a.x, a.y), (a.x, a.y + h * 0.4)
        return (a.x, a.y), (a.x, a.y)
    if tpl.path == "turn":
        return (a.x, a.y), (a.x, a.y)
    if tpl.path in ("left_right", "right_left"):
        x0, x1 = w * rng.uniform(0.14, 0.26), w * rng.uniform(0.74, 0.86)
        if tpl.path == "right_left":
            x0, x1 = x1, x0
        return (x0, a.y), (x1, a.y)
    gap = a.r + b.r + 2
    if tpl.path in ("closer", "away", "put_on", "drop_into", "cover"):
        b.x, b.y = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.55, 0.7)
    side = 1 if rng.random() < 0.5 else -1
    far = (b.x + side * w * 0.36, b.y + rng.uniform(-0.1, 0.1) * h)
    near = (b.x + side * (gap + 1), b.y)
    if tpl.path == "closer":
        return far, near
    if tpl.path == "away":
        return near, far
    if tpl.path == "put_on":
        return far, (b.x, b.y - b.r - a.r * 0.8)
    if tpl.path == "drop_into":
        return (b.x, b.y - h * 0.42), (b.x, b.y)
    if tpl.path == "cover":
        return far, (b.x, b.y - 1)
    raise ValueError(tpl.path)


@dataclass
class Scene:
    """One synthetic video: its label entry, exact tracks, frames (T, H, W, 3) and the frames left out of its
    annotation lists (`gaps`, as in the real data), and in a two-actor scene what each actor does (`actions`)."""

    entry: LabelEntry
    tracks: VideoTracks
    frames: np.ndarray
    gaps: set[int]
    actions: dict[str, str] | None = None  # two-actor scenes: object id -> verb phrase (see actions.json)


def _radius(cfg: SyntheticConfig) -> float:
    """The typical object radius; also the unit of the spacing between objects."""
    return min(cfg.width, cfg.height) * 0.085 * cfg.object_scale


def _choose_objects(tpl: Template, cfg: SyntheticConfig, rng: np.random.Generator) -> list[SceneObject]:
    """The scene's objects in slot order (the template's slots first), not yet placed."""
    min_obj = max(cfg.min_objects, tpl.slots)
    n_obj = int(rng.integers(min_obj, max(min_obj, cfg.max_objects) + 1))
    if tpl.slots == 1 and rng.random() < cfg.single_object_fraction:
        n_obj = 1
    names = [OBJECT_NAMES[i] for i in rng.choice(len(OBJECT_NAMES), size=n_obj, replace=False)]
    r = _radius(cfg)
    objs = []
    for name in names:
        color, shape = name.split(" ")
        objs.append(SceneObject(name, shape, COLORS[color], 0.0, 0.0, r * rng.uniform(0.9, 1.15)))
    return objs


def _scatter(objs: list[SceneObject], taken: list[tuple[float, float]], r: float, w: int, h: int,
             rng: np.random.Generator) -> None:
    """Put each object in a free spot (up to 200 tries: more than 2.6 r from every point in `taken`)."""
    for o in objs:
        for _ in range(200):
            o.x, o.y = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.32, 0.88)
            if all(math.hypot(o.x - px, o.y - py) > 2.6 * r for px, py in taken):
                break
        taken.append((o.x, o.y))


def _stage(tpl: Template, objs: list[SceneObject], cfg: SyntheticConfig, rng: np.random.Generator) -> _Staging:
    """Place the objects: the acted-on one first (centre-ish) with its path, the others in free spots away
    from the path (and from the partner of a two-slot template); about half of those drift slightly."""
    w, h = cfg.width, cfg.height
    objs[0].x, objs[0].y = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.5, 0.72)
    start, end = _plan(tpl, objs, w, h, rng)
    actor = objs[1] if tpl.path == "cover" else objs[0]
    partner = objs[0] if tpl.path == "cover" else (objs[1] if len(objs) > 1 else None)
    fixed = [o for o in objs if o is not actor and (tpl.slots == 1 or o is not partner)]
    path_pts = [start, end, ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)]
    taken = path_pts + ([(partner.x, partner.y)] if partner is not None and tpl.slots == 2 else [])
    r = _radius(cfg)
    _scatter(fixed, taken, r, w, h, rng)
    drift = {id(o): (rng.uniform(-1, 1) * r * 0.4, rng.uniform(-1, 1) * r * 0.2) if rng.random() < 0.5 else (0, 0)
             for o in fixed}
    return _Staging(tpl, objs, actor, partner, start, end, drift, cfg.motion_scale)


def _second_actor(st: _Staging, cfg: SyntheticConfig, index: int) -> _Staging | None:
    """The second actor's staging in a two-actor scene, or None. Its draws come from a generator of its own,
    seeded by (seed, index, 2) and drawn only when the share is above 0, so the scene's other draws (and the
    default's bytes) stay as they are. Lifting and dropping start where a 0.3-frame move stays in the frame."""
    if cfg.two_actor_fraction <= 0 or len(st.objects) < 2:
        return None
    rng = np.random.default_rng([cfg.seed, index, 2])
    if rng.random() >= cfg.two_actor_fraction:
        return None
    free = [o for o in st.objects if o is not st.actor and (st.tpl.slots == 1 or o is not st.partner)]
    if not free:  # every object belongs to the template: none can act on its own
        return None
    o = free[int(rng.integers(len(free)))]
    verbs = [v for v in IN_PLACE if v != st.tpl.verb]
    verb = verbs[int(rng.integers(len(verbs)))]
    tpl = next(t for t in all_templates() if t.path == "in_place" and t.verb == verb)
    h = cfg.height
    y0 = max(o.y, h * 0.45) if verb == "lifting" else min(o.y, h * 0.55) if verb == "dropping" else o.y
    dy = {"lifting": -0.3 * h, "dropping": 0.3 * h}.get(verb, 0.0)
    return replace(st, tpl=tpl, actor=o, partner=None, start=(o.x, y0), end=(o.x, y0 + dy), drift={}, second=None)


def _scene_actions(st: _Staging) -> dict[str, str] | None:
    """Object id -> verb phrase of both actors of a two-actor scene (slot order); None for one actor."""
    if st.second is None:
        return None
    acts = {st.slot(st.actor): st.tpl.verb, st.slot(st.second.actor): st.second.tpl.verb}
    return dict(sorted(acts.items(), key=lambda kv: int(kv[0])))


def _hand_box(img: np.ndarray, o: SceneObject, pose: Pose) -> tuple | None:
    """Draw the hand that acts on `o` at `pose` (if it has one); returns its box."""
    if pose.hand is None:
        return None
    return _draw_hand(img, pose.cx + pose.hand[0] * o.r, pose.cy + pose.hand[1] * o.r, o.r * 0.8)


def _draw_frame(img: np.ndarray, st: _Staging, p: float) -> dict[str, tuple]:
    """Draw the scene at progress p onto `img`: the objects behind the actor (a second actor among them, in
    its own motion), the actor, those in front of it (what it was dropped into, once it is inside), then the
    second actor's hand and the actor's hand. Returns the boxes drawn, by track id (the second hand has none)."""
    actor, second = st.actor, st.second
    pose = _state(st, p)
    second_pose = _state(second, p) if second is not None else None
    under, over = [], []
    for o in st.objects:
        if o is actor:
            continue
        if second is not None and o is second.actor:
            under.append((o, second_pose))
            continue
        dxo, dyo = st.drift.get(id(o), (0, 0))
        q = _ease(p)
        still = Pose(o.x + dxo * q, o.y + dyo * q)
        (over if st.tpl.path == "drop_into" and o is st.partner and p > 0.6 else under).append((o, still))
    boxes = {}
    for o, o_pose in under + [(actor, pose)] + over:
        boxes[st.slot(o)] = _draw_object(img, o, o_pose)
    if second is not None:
        _hand_box(img, second.actor, second_pose)
    hand = _hand_box(img, actor, pose)
    if hand is not None:
        boxes[HAND] = hand
    return boxes


def _label_entry(index: int, tpl: Template, objs: list[SceneObject]) -> LabelEntry:
    placeholders = [o.name for o in objs][:tpl.slots]
    label = tpl.text
    for ph in placeholders:
        label = label.replace("[something]", ph, 1)
    return LabelEntry(id=str(100000 + index), label=label.lower(), template=tpl.text, placeholders=placeholders)


def make_scene(index: int, cfg: SyntheticConfig, templates: list[Template]) -> Scene:
    """One video: label entry, exact tracks, frames and the annotation gaps. Pure in (index, cfg): every draw
    comes from one generator seeded by (cfg.seed, index), so the order of the steps below is part of the output
    (template, objects, places, timing, background, gaps); a second actor's from its own (see _second_actor)."""
    rng = np.random.default_rng([cfg.seed, index])
    w, h = cfg.width, cfg.height
    tpl = templates[int(rng.integers(len(templates)))]
    objs = _choose_objects(tpl, cfg, rng)
    st = _stage(tpl, objs, cfg, rng)
    st.second = _second_actor(st, cfg, index)
    n_frames = int(round(cfg.fps * rng.uniform(cfg.min_seconds, cfg.max_seconds)))
    t0, t1 = int(n_frames * rng.uniform(0.08, 0.2)), int(n_frames * rng.uniform(0.8, 0.92))
    bg = _background(rng, w, h)
    boxes: dict[str, dict[int, tuple]] = {**{str(k): {} for k in range(len(objs))}, HAND: {}}
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    for t in range(n_frames):
        img = bg.copy()
        for track, box in _draw_frame(img, st, (t - t0) / max(1, t1 - t0)).items():
            boxes[track][t] = box
        frames[t] = img
    entry = _label_entry(index, tpl, objs)
    vt = VideoTracks(entry.id, {k: v for k, v in boxes.items() if v},
                     {**{str(k): o.name for k, o in enumerate(objs)}, HAND: HAND}, entry.placeholders,
                     n_entries=n_frames)
    # an object or the hand that has left the frame gets no box on that frame, as in Something-Else
    vt = vt.clipped_to(w, h)
    gaps: set[int] = set()
    if cfg.gaps > 0:
        gaps = {t for t in range(1, n_frames) if rng.random() < cfg.gaps}
    return Scene(entry, vt, frames, gaps, _scene_actions(st))


@dataclass
class _Written:
    """What the writer of one video hands back (the frames stay behind, in the mp4)."""

    entry: LabelEntry
    tracks: VideoTracks
    gaps: set[int]
    actions: dict[str, str] | None


def _write_one(index: int, cfg: SyntheticConfig, templates: list[Template], videos_dir: Path) -> _Written:
    scene = make_scene(index, cfg, templates)
    write_video(Path(videos_dir) / f"{scene.entry.id}.mp4", scene.frames, cfg.fps)
    return _Written(scene.entry, scene.tracks, scene.gaps, scene.actions)


def select_templates(cfg: SyntheticConfig) -> list[Template]:
    templates = all_templates()
    if cfg.templates:
        wanted = set(cfg.templates)
        templates = [t for t in templates if t.key in wanted or t.text in wanted]
        if not templates:
            raise ValueError(f"no synthetic template matches {sorted(wanted)}; known: {[t.key for t in all_templates()]}")
    return templates


def generate(cfg: SyntheticConfig, out: str | Path, workers: int = 1) -> dict:
    """Write labels.json, annotations.json, videos/ and (with two_actor_fraction > 0) actions.json under `out`.
    Same cfg -> same bytes. Resumable: videos already written are kept (they are a pure function of the index
    and cfg)."""
    out = Path(out)
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    templates = select_templates(cfg)
    start = time.time()
    write = partial(_write_one, cfg=cfg, templates=templates, videos_dir=videos_dir)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(write, range(cfg.videos), chunksize=4), total=cfg.videos, desc="synth",
                                unit="video"))
    else:
        results = [write(i) for i in tqdm(range(cfg.videos), desc="synth", unit="video")]
    entries = [r.entry for r in results]
    save_labels(out / "labels.json", entries)
    save_annotations(out / "annotations.json", {r.tracks.video_id: r.tracks for r in results},
                     gaps={r.tracks.video_id: r.gaps for r in results})
    if cfg.two_actor_fraction > 0:
        atomic_write_json(out / "actions.json", {r.entry.id: r.actions for r in results if r.actions})
    summary = {"videos": len(entries), "templates": len({e.template for e in entries}),
               "object_names": len({n for r in results for k, n in r.tracks.categories.items() if k != HAND}),
               "seconds": round(time.time() - start, 2), "config": cfg.model_dump()}
    atomic_write_json(out / "synth_summary.json", {k: v for k, v in summary.items() if k != "seconds"})
    return summary
