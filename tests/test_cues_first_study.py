"""The first study's cue: what it draws, pixel by pixel, where (frame from the annotation's name or from its list
position), in which colours; pixel-equal to the study's own drawing code on the real Something-Else fixture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cuelab.data.something_else import parse_video
from cuelab.errors import DataError
from cuelab.tracks import VideoTracks
from cuelab.video.cues import STUDY_COLORS, get_cue
from cuelab.video.first_study_codec import STUDY_FPS, crop_even
from cuelab.video.io import read_video, write_video
from tests.conftest import fixture_path

REFERENCE = Path(__file__).parent / "data" / "first_study_cue_reference.json"
H, W = 80, 100


def _frames(cue_name: str, tracks: VideoTracks, n: int, **style) -> tuple[np.ndarray, np.ndarray]:
    """(black input frame, the n cued frames)."""
    cue = get_cue(cue_name, **style)
    layout = cue.layout(tracks, W, H)
    blank = np.zeros((H, W, 3), np.uint8)
    return blank, np.stack([cue.draw(blank, t, layout) for t in range(n)])


def _lit(frame: np.ndarray) -> np.ndarray:
    return frame.any(axis=2)


def test_box_edges_centred_on_the_truncated_corner_two_thick():
    tracks = VideoTracks("v1", {"0": {0: (10.7, 20.2, 40.9, 50.6)}})
    _, out = _frames("first_study", tracks, 1)
    color = get_cue("first_study").colors(tracks)["0"]
    # OpenCV thickness 2 (the study's "2 px") covers the edge line and one pixel either side
    assert np.nonzero(_lit(out[0])[35])[0].tolist() == [9, 10, 11, 39, 40, 41]
    assert np.nonzero(_lit(out[0])[:, 25])[0].tolist() == [19, 20, 21, 49, 50, 51]
    assert tuple(out[0][35, 10]) == color and color in STUDY_COLORS
    assert not _lit(out[0])[22:49, 12:39].any()  # first box: no trail yet, inside untouched


def test_dots_at_past_centres_joined_by_a_one_pixel_line():
    boxes = {0: (10, 10, 30, 30), 1: (10, 30, 30, 50), 2: (60, 10, 90, 40)}  # centres (20,20) (20,40) (75,25)
    _, out = _frames("first_study", VideoTracks("v1", {"0": boxes}), 4)
    f1, f2 = _lit(out[1]), _lit(out[2])
    for y, x in ((20, 20), (20, 18), (20, 22), (18, 20), (22, 20), (19, 19), (21, 21)):
        assert f2[y, x] and f2[y + 20, x], (y, x)  # radius-2 dots at both earlier centres
    for y, x in ((20, 23), (20, 17), (22, 22), (18, 18)):
        assert not f2[y, x] and not f2[y + 20, x], (y, x)  # nothing outside radius 2
    assert not f2[17, 20] and not f2[43, 20]  # (between the dots the line runs)
    assert np.nonzero(f2[30, :50])[0].tolist() == [20]  # the line between them: 1 px
    assert not f2[25, 75]  # the current centre has no dot
    assert f1[20, 20] and not f1[40, 20] and not f1[25, 20]  # frame 1: one earlier centre, no line yet
    assert not _lit(out[3]).any()  # no box on frame 3: nothing, not even the trail


def test_nothing_on_frames_without_the_objects_box_and_the_hand_is_skipped():
    tracks = VideoTracks("v1", {"0": {0: (10, 10, 30, 30), 2: (12, 12, 32, 32)},
                                "hand": {0: (50, 40, 90, 70), 1: (50, 40, 90, 70), 2: (50, 40, 90, 70)}})
    blank, out = _frames("first_study", tracks, 4)
    assert (out[1] == blank).all() and (out[3] == blank).all()
    assert _lit(out[0]).any() and _lit(out[2])[20, 20]  # frame 2: its box and the frame-0 centre
    assert not _lit(out[:, 38:, 48:]).any()  # no hand box
    colors = get_cue("first_study").colors(tracks)
    assert set(colors) == {"0", "hand"} and colors["0"] != colors["hand"]  # the hand takes a colour, as it did


def test_colours_sampled_per_video_from_the_seed():
    tracks = VideoTracks("v1", {"0": {0: (10, 10, 30, 30)}, "1": {0: (40, 40, 60, 60)}, "hand": {0: (0, 0, 5, 5)}})
    same = [get_cue("first_study", seed=7).colors(tracks) for _ in range(2)]
    assert same[0] == same[1] and len(set(same[0].values())) == 3 and set(same[0].values()) <= set(STUDY_COLORS)
    deals = {tuple(get_cue("first_study", seed=s).colors(tracks).values()) for s in range(20)}
    assert len(deals) > 5
    other = VideoTracks("v2", tracks.tracks)
    assert len({tuple(get_cue("first_study", seed=0).colors(VideoTracks(v, tracks.tracks)).values())
                for v in ("v1", "v2", "v3", "v4", "v5")}) > 1
    assert get_cue("first_study", seed=0).colors(other) == get_cue("first_study_listpos", seed=0).colors(other)
    a, b = _frames("first_study", tracks, 1, seed=7)[1], _frames("first_study", tracks, 1, seed=7)[1]
    assert (a == b).all()  # same config + seed: same pixels
    many = VideoTracks("v1", {str(i): {0: (1, 1, 5, 5)} for i in range(10)})
    with pytest.raises(DataError, match="9 colours"):
        get_cue("first_study").layout(many, W, H)


def test_list_position_draws_annotation_i_on_frame_i():
    # boxes annotated on frames 3 and 6 only (names 0004 and 0007): a list of two entries
    tracks = VideoTracks("v1", {"0": {3: (10, 10, 30, 30), 6: (50, 30, 70, 50)}}, n_entries=2)
    blank, by_name = _frames("first_study", tracks, 8)
    _, by_pos = _frames("first_study", tracks, 8, frame_from="list_position")
    _, listpos = _frames("first_study_listpos", tracks, 8)
    drawn = lambda frames: [t for t in range(8) if (frames[t] != blank).any()]  # noqa: E731
    assert drawn(by_name) == [3, 6] and drawn(by_pos) == [0, 1]
    assert (by_pos[0] == by_name[3]).all() and (by_pos[1] == by_name[6]).all()
    assert (listpos == by_pos).all()
    bad = VideoTracks("v1", tracks.tracks, n_entries=3)  # an entry with no box held a list position
    with pytest.raises(DataError, match="video v1.*list positions"):
        get_cue("first_study_listpos").layout(bad, W, H)
    with pytest.raises(DataError, match="frame_from"):
        get_cue("first_study", frame_from="index")
    with pytest.raises(DataError, match="drawing cue"):
        get_cue("wrong_object", inner="first_study")


@pytest.mark.parametrize("variant", ["as_is", "gapped"])
def test_same_pixels_as_the_study_code_on_real_annotations(variant):
    raw = json.loads(fixture_path("something-else", "annotations.json").read_text())
    ref = json.loads(REFERENCE.read_text())["variants"][variant]
    drop = set(ref.get("drop", []))
    for vid, r in ref["videos"].items():
        tracks = parse_video(vid, [e for i, e in enumerate(raw[vid]) if i not in drop], file="annotations.json")
        blank = np.zeros((r["height"], r["width"], 3), np.uint8)
        digests = {}
        for name in ("first_study", "first_study_listpos"):
            cue = get_cue(name, seed=0)
            layout = cue.layout(tracks, r["width"], r["height"])
            frames = crop_even(np.stack([cue.draw(blank, t, layout) for t in range(r["frames"])]))
            digests[name] = hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()
        assert digests["first_study_listpos"] == r["sha256"], vid
        # the real lists run on from frame 1, so the name reads the same there; with the gaps it does not
        assert (digests["first_study"] == r["sha256"]) == (variant == "as_is"), vid


def test_crop_to_even_size_as_the_study_encoded(tmp_path):
    clip = np.random.default_rng(0).integers(0, 255, (3, 241, 427, 3), dtype=np.uint8)
    cropped = crop_even(clip)
    assert cropped.shape == (3, 240, 426, 3) and (cropped == clip[:, :240, :426]).all()
    assert crop_even(clip[0]).shape == (240, 426, 3) and crop_even(cropped).shape == cropped.shape
    write_video(tmp_path / "c.mp4", cropped, STUDY_FPS)
    back = read_video(tmp_path / "c.mp4")
    assert (back.width, back.height, back.fps) == (426, 240, 12.0)  # cuelab's writer alone pads to 428 x 242
    with pytest.raises(ValueError, match="shape"):
        crop_even(clip[0, :, :, 0])
