"""The cue library: each cue's pixels on a frame with a known box, nothing where no box exists, frame alignment
by frame index on annotation lists with gaps, the controls, clipping, purity."""

from __future__ import annotations

import numpy as np
import pytest

from cuelab.data.something_else import load_annotations, save_annotations
from cuelab.errors import DataError
from cuelab.tracks import VideoTracks
from cuelab.video.cues import CUES, decoy_offset, get_cue
from cuelab.video.palette import HAND_COLOR, slot_color

H, W = 120, 160
RED, BLUE, WHITE = slot_color(0), slot_color(1), HAND_COLOR[1]
BOX0 = (20.0, 30.0, 60.0, 70.0)  # drawn as pixels x 20..59, y 30..69
BOX1 = (100.0, 20.0, 140.0, 50.0)
HAND_BOX = (70.0, 80.0, 90.0, 110.0)


def gray(h=H, w=W):
    return np.full((h, w, 3), 128, np.uint8)


def textured(h=H, w=W):
    """A checkerboard, so that blurring visibly changes it."""
    yy, xx = np.mgrid[:h, :w]
    v = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 40, 215).astype(np.uint8)
    return np.repeat(v[..., None], 3, axis=2)


def tracks_one_frame(t=10, hand=True) -> VideoTracks:
    tr = {"0": {t: BOX0}, "1": {t: BOX1}}
    if hand:
        tr["hand"] = {t: HAND_BOX}
    return VideoTracks("v", tr)


def is_color(px, color) -> bool:
    return tuple(int(c) for c in px) == tuple(color)


def mask(img, color):
    return np.all(img == np.array(color, np.uint8), axis=-1)


# --- what each cue draws on a frame with a known box ----------------------------------------------------------

def check_box_edges(out, box, color):
    x1, y1, x2, y2 = int(box[0]), int(box[1]), int(box[2]) - 1, int(box[3]) - 1
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    for x, y in ((x1, cy), (x2, cy), (cx, y1), (cx, y2)):
        assert is_color(out[y, x], color), f"no {color} at box edge ({x}, {y}): {out[y, x]}"


def check_box(out, frame):
    check_box_edges(out, BOX0, RED)
    check_box_edges(out, BOX1, BLUE)
    assert np.array_equal(out[45, 40], frame[45, 40]), "box interior must stay untouched"


def check_trajectory(out, frame):
    assert is_color(out[49, 39], RED) and is_color(out[34, 119], BLUE), "a dot at the box centre"
    assert not mask(out, RED)[:, :15].any(), "the path stays at the object"


def check_box_trajectory(out, frame):
    check_box_edges(out, BOX0, RED)
    check_trajectory(out, frame)


def check_spotlight(out, frame):
    check_box_edges(out, BOX0, RED)
    assert np.array_equal(out[35:65, 25:55], frame[35:65, 25:55]), "inside the box: the original pixels"
    assert int(out[5, 5, 0]) < 0.5 * int(frame[5, 5, 0]), "outside every box: darkened"


def check_blur_outside(out, frame):
    check_box_edges(out, BOX0, RED)
    assert np.array_equal(out[35:65, 25:55], frame[35:65, 25:55]), "inside the box: the original pixels"
    far = (slice(90, 118), slice(110, 158))
    assert out[far].std() < 0.3 * frame[far].std(), "outside every box: blurred"


def check_circle(out, frame):
    ys, xs = np.nonzero(mask(out, RED))
    assert len(xs) > 50
    assert abs((xs.min() + xs.max()) / 2 - 39.5) <= 1.5 and abs((ys.min() + ys.max()) / 2 - 49.5) <= 1.5, \
        "centred on the box"
    assert xs.min() < 20 and xs.max() > 59 and ys.min() < 30 and ys.max() > 69, "around the box, not inside it"
    assert not mask(out, RED)[40:60, 30:50].any(), "the object itself stays visible"


def check_arrow(out, frame):
    ys, xs = np.nonzero(mask(out, RED))
    assert len(xs) > 10
    tip = np.argmax(ys)
    assert 28 <= ys[tip] <= 33 and abs(xs[tip] - 39) <= 3, "the tip touches the top edge of the box, mid-width"
    assert ys.min() < 20, "the arrow comes from above"
    assert not mask(out, RED)[34:70, 20:60].any(), "the arrow does not cover the object"


def check_side_by_side(out, frame):
    assert out.shape == (H, 2 * W, 3)
    assert np.array_equal(out[:, :W], frame), "left: the clean frame"
    check_box_edges(out[:, W:], BOX0, RED)


def check_plain(out, frame):
    assert np.array_equal(out, frame)


CHECKS = {"plain": check_plain, "box": check_box, "trajectory": check_trajectory,
          "box_trajectory": check_box_trajectory, "spotlight": check_spotlight, "blur_outside": check_blur_outside,
          "circle": check_circle, "arrow": check_arrow, "side_by_side": check_side_by_side}


def test_every_registered_cue_has_a_pixel_test():
    # the first study's cues have their own pixel tests (tests/test_cues_first_study.py)
    assert set(CUES) == set(CHECKS) | {"wrong_object", "shifted", "first_study", "first_study_listpos"}


@pytest.mark.parametrize("name", list(CHECKS))
def test_cue_draws_on_the_box(name):
    frame = textured() if name == "blur_outside" else gray()
    before = frame.copy()
    out = get_cue(name).annotate(frame, 10, tracks_one_frame())
    assert out.dtype == np.uint8 and out is not frame
    assert np.array_equal(frame, before), "annotate must not modify its input"
    CHECKS[name](out, frame)
    assert not mask(out, WHITE).any(), "the hand is skipped by default"


@pytest.mark.parametrize("name", list(CUES))
def test_nothing_drawn_where_no_box_exists(name):
    """Frame 9 has no box for any object (and no earlier one): every cue leaves it as it is."""
    frame = textured()
    out = get_cue(name).annotate(frame, 9, tracks_one_frame())
    if name == "side_by_side":
        out = out[:, W:]
    assert np.array_equal(out, frame)


@pytest.mark.parametrize("name", ["box", "circle", "arrow", "spotlight", "blur_outside", "wrong_object", "shifted"])
def test_no_box_after_the_last_annotated_frame(name):
    frame = gray()
    assert np.array_equal(get_cue(name).annotate(frame, 11, tracks_one_frame()), frame)


def test_trajectory_shows_the_path_so_far_only():
    tr = VideoTracks("v", {"0": {0: (10, 10, 20, 20), 5: (50, 10, 60, 20), 10: (90, 10, 100, 20)}})
    cue = get_cue("trajectory")
    at5 = mask(cue.annotate(gray(), 5, tr), RED)
    assert at5[15, 15:55].all(), "the path joins the centres of frames 0 and 5"
    assert not at5[:, 70:].any(), "nothing of the future (frame 10) is drawn"
    at7 = mask(cue.annotate(gray(), 7, tr), RED)
    assert at7[15, 15:55].all(), "a frame without a box still shows the path so far"
    assert mask(cue.annotate(gray(), 10, tr), RED)[15, 15:95].all()


@pytest.mark.parametrize("name", ["box", "trajectory", "circle", "arrow"])
def test_hand_is_drawn_only_when_asked(name):
    tr = tracks_one_frame()
    assert not mask(get_cue(name).annotate(gray(), 10, tr), WHITE).any()
    assert mask(get_cue(name, include_hand=True).annotate(gray(), 10, tr), WHITE).any()


def test_annotate_is_pure_and_equals_layout_then_draw():
    tr = tracks_one_frame()
    for name in CUES:
        cue = get_cue(name)
        frame = textured()
        a, b = cue.annotate(frame, 10, tr), cue.annotate(frame, 10, tr)
        c = cue.draw(frame, 10, cue.layout(tr, W, H))
        assert np.array_equal(a, b) and np.array_equal(a, c), name


def test_line_width_scales_with_frame_size():
    tr = tracks_one_frame()
    small = get_cue("box").layout(tr, 160, 120).thickness
    large = get_cue("box").layout(tr, 640, 480).thickness
    assert small >= 2 and large >= 2 * small
    assert get_cue("box", thickness=5).layout(tr, 160, 120).thickness == 5


# --- frame alignment and clipping ------------------------------------------------------------------------------

def test_boxes_follow_frame_numbers_not_list_positions(tmp_path):
    """The real format's list skips frames: entries 0004.jpg and 0011.jpg are frames 3 and 10, never 0 and 1."""
    tr = VideoTracks("v", {"0": {3: (10, 10, 40, 40), 10: BOX0}})
    save_annotations(tmp_path / "a.json", {"v": tr})
    back = load_annotations(tmp_path / "a.json").videos["v"]
    cue = get_cue("box")
    layout = cue.layout(back, W, H)
    drawn = [t for t in range(20) if mask(cue.draw(gray(), t, layout), RED).any()]
    assert drawn == [3, 10]
    at10 = cue.draw(gray(), 10, layout)
    check_box_edges(at10, BOX0, RED)
    assert not mask(at10, RED)[10, 10:40].any(), "frame 10 shows frame 10's box, not frame 3's"


def test_boxes_are_clipped_to_the_frame():
    tr = VideoTracks("v", {"0": {0: (-30.0, -20.0, 40.0, 50.0)}, "1": {0: (200.0, 10.0, 260.0, 40.0)}})
    out = get_cue("box").annotate(gray(), 0, tr)
    m = mask(out, RED)
    assert m[25, 0] and m[0, 20] and m[25, 39] and m[49, 20], "the clipped box is drawn on the frame border"
    assert not mask(out, BLUE).any(), "a box wholly outside the frame draws nothing"
    for name in CUES:  # no cue may fail on such boxes
        get_cue(name).annotate(gray(), 0, tr)


# --- controls --------------------------------------------------------------------------------------------------

def test_wrong_object_cues_the_other_objects_never_the_target():
    out = get_cue("wrong_object").annotate(gray(), 10, tracks_one_frame())
    check_box_edges(out, BOX1, RED)  # the red box (the target's colour) sits on object 1
    x1, y1, x2, y2 = (int(v) for v in BOX0)
    edges = np.concatenate([out[y1:y2, x1], out[y1:y2, x2 - 1], out[y1, x1:x2], out[y2 - 1, x1:x2]])
    assert np.all(edges == 128), "nothing is drawn on the target, object 0"


def _boxes_of(img, color):
    ys, xs = np.nonzero(mask(img, color))
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_wrong_object_on_a_single_object_video_draws_a_decoy_off_the_object():
    frames = {t: (20.0 + 3 * t, 30.0, 60.0 + 3 * t, 70.0) for t in range(8)}
    tr = VideoTracks("v", {"0": frames, "hand": {t: (b[0], b[3], b[2], b[3] + 20) for t, b in frames.items()}})
    cue = get_cue("wrong_object", thickness=1)  # 1-px lines: the drawn extent is the box itself
    layout = cue.layout(tr, W, H)
    offsets = set()
    for t in range(8):
        out = cue.draw(gray(), t, layout)
        bx = _boxes_of(out, RED)
        ox1, oy1, ox2, oy2 = frames[t]
        assert (bx[2] - bx[0], bx[3] - bx[1]) == (ox2 - ox1 - 1, oy2 - oy1 - 1), "same size as the object's box"
        assert bx[2] < ox1 or bx[0] >= ox2 or bx[3] < oy1 or bx[1] >= oy2, "off the object"
        offsets.add((bx[0] - ox1, bx[1] - oy1))
    assert len(offsets) == 1, "one offset for the whole video: the decoy moves with the object"


def test_shifted_moves_every_cue_off_every_object():
    rng = np.random.default_rng(0)
    for _ in range(20):
        boxes = {}
        for o in ("0", "1", "hand"):
            x, y = rng.uniform(0, W - 30), rng.uniform(0, H - 30)
            boxes[o] = {t: (x + t, y, x + t + rng.uniform(12, 25), y + rng.uniform(12, 25)) for t in range(5)}
        tr = VideoTracks("v", boxes)
        for o in ("0", "1"):
            dx, dy = decoy_offset(tr.tracks[o], tr, W, H, gap=4)
            assert (dx, dy) != (0, 0)
            assert decoy_offset(tr.tracks[o], tr, W, H, gap=4) == (dx, dy), "deterministic"
            for t in range(5):
                x1, y1, x2, y2 = tr.tracks[o][t]
                moved = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
                for other in tr.tracks.values():
                    b = other[t]
                    ov = max(0, min(moved[2], b[2]) - max(moved[0], b[0])) * max(0, min(moved[3], b[3]) - max(moved[1], b[1]))
                    # a free spot exists in these sparse scenes, so the chosen one overlaps nothing
                    assert ov == 0, (o, t, moved, b)
    out = get_cue("shifted").annotate(gray(), 10, tracks_one_frame())
    assert mask(out, RED).any() and mask(out, BLUE).any(), "each object's cue is still drawn, in its colour"


def test_shifted_decoy_stays_visible_when_a_surface_box_covers_the_frame():
    """A mat/table box over the whole frame is not an object to avoid: the decoy must not leave the frame."""
    tr = VideoTracks("v", {"0": {0: BOX0}, "1": {0: (0.0, 0.0, float(W), float(H))}})
    dx, dy = decoy_offset(tr.tracks["0"], tr, W, H, gap=4)
    x1, y1, x2, y2 = BOX0[0] + dx, BOX0[1] + dy, BOX0[2] + dx, BOX0[3] + dy
    assert 0 <= x1 and x2 <= W and 0 <= y1 and y2 <= H


def test_unknown_cue_and_bad_style_are_clear_errors():
    with pytest.raises(DataError, match="known cues: plain, box"):
        get_cue("boxes")
    with pytest.raises(DataError, match="bad style option"):
        get_cue("box", colour="red")
    with pytest.raises(DataError):
        get_cue("shifted", inner="wrong_object")


def test_shifted_cues_of_two_objects_do_not_land_on_each_other():
    # object 1's first free spot (left: right is the hand) is exactly object 0's first free spot (right)
    tr = VideoTracks("v", {"0": {t: (10.0, 40.0, 40.0, 70.0) for t in range(4)},
                           "1": {t: (78.0, 40.0, 108.0, 70.0) for t in range(4)},
                           "hand": {t: (112.0, 40.0, 142.0, 70.0) for t in range(4)}})
    layout = get_cue("shifted").layout(tr, W, H)
    a, b = (m.boxes[0].astype(float) for m in layout.marks)
    overlap = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    assert overlap == 0, (a, b)


@pytest.mark.parametrize("name", ["spotlight", "blur_outside"])
def test_region_cues_do_not_flicker_in_annotation_gaps(name):
    """Frames 3 and 9 are annotated, 4-8 are a gap: the background stays treated, the region stays at the
    nearest box, and no outline is drawn where no box exists."""
    tr = VideoTracks("v", {"0": {3: BOX0, 9: BOX1}})
    cue = get_cue(name)
    frame = textured()
    far = (slice(100, 118), slice(5, 15))  # far from both boxes
    for t in range(4, 9):
        out = cue.annotate(frame, t, tr)
        assert not np.array_equal(out[far], frame[far]), f"frame {t}: background treated in the gap"
        assert not mask(out, RED).any() and not mask(out, BLUE).any(), "no outline without a box"
        near = BOX0 if t <= 6 else BOX1  # frame 6 is as far from 3 as from 9: the earlier box wins
        x1, y1, x2, y2 = (int(v) for v in near)
        assert np.array_equal(out[y1 + 3:y2 - 3, x1 + 3:x2 - 3], frame[y1 + 3:y2 - 3, x1 + 3:x2 - 3])
    assert np.array_equal(cue.annotate(frame, 10, tr), frame), "after the last box: untouched"
