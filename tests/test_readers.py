"""Readers of the real formats, on the real fixtures and on bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cuelab.data.something_else import load_annotations, parse_video, save_annotations
from cuelab.data.ssv2 import load_labels
from cuelab.data.inspect import frame_counts, inspect_dataset
from cuelab.errors import DataError
from cuelab.fsutil import safe_join
from cuelab.video.io import VideoError, find_video, read_video
from tests.conftest import fixture_path


def _entry(name, boxes):
    return {"name": name, "labels": [{"box2d": dict(zip(("x1", "y1", "x2", "y2"), b)), "gt_annotation": g,
                                      "category": g} for g, b in boxes], "gt_placeholders": ["x"], "nr_instances": 1}


# --- real fixtures -------------------------------------------------------------------------------------------

def test_all_13_annotated_videos_load_with_frame_counts():
    ann = fixture_path("something-else", "annotations.json")
    frames = fixture_path("something-else", "frames")
    aset = load_annotations(ann, root=frames)
    assert len(aset.videos) == 13 and not aset.errors
    counts = frame_counts(ann, frames)["videos"]
    assert set(counts) == set(aset.videos)
    for vid, row in counts.items():
        assert row["video_frames"] > 0 and "video_error" not in row, vid
        assert row["annotation_entries"] == aset.videos[vid].n_entries
    # 151201 has 33 frames on disk but boxes for 23: the report shows it
    assert counts["151201"]["video_frames"] == 33 and counts["151201"]["last_annotated_frame"] == 23


def test_four_labelled_videos_join_their_label_entries():
    labels = load_labels(fixture_path("something-else", "labels.json"))
    report = inspect_dataset(fixture_path("something-else", "labels.json"),
                             fixture_path("something-else", "annotations.json"), None)
    assert sorted(report["annotations"]["with_label"]) == sorted(["80962", "2", "13201", "57082"])
    aset = load_annotations(fixture_path("something-else", "annotations.json"))
    by_id = {e.id: e for e in labels}
    for vid in report["annotations"]["with_label"]:
        # joined by id: one annotated placeholder per template slot (the wording may differ: 'box' vs
        # 'small box' for 57082, which is why joins go by video id, never by placeholder text)
        assert len(aset.videos[vid].placeholders) == len(by_id[vid].slots) == len(by_id[vid].placeholders)


def test_real_ssv2_labels_and_webm():
    entries = load_labels(fixture_path("ssv2", "base_validation_set.json"))
    assert len(entries) == 12467
    assert all(e.template and e.id for e in entries)
    video = read_video(fixture_path("ssv2", "166766.webm"))
    assert (video.width, video.height) == (427, 240) and video.fps == pytest.approx(12.0)
    assert video.n_frames > 20


def test_frame_index_comes_from_name_not_list_position():
    tr = parse_video("7", [_entry("7/0001.jpg", [("object 0", (1, 1, 5, 5))]),
                           _entry("7/0010.jpg", [("object 0", (2, 2, 6, 6))])], file="f.json")
    assert sorted(tr.tracks["0"]) == [0, 9]
    assert tr.boxes_at(9).get("0").tolist() == [2, 2, 6, 6]
    assert len(tr.boxes_at(1)) == 0  # no box where none was annotated


# --- bad input -----------------------------------------------------------------------------------------------

def test_malformed_json_names_file_and_position(tmp_path):
    p = tmp_path / "labels.json"
    p.write_text('[{"id": "1", "label": "x",\n "template": }]')
    with pytest.raises(DataError) as e:
        load_labels(p)
    assert str(p) in str(e.value) and "line 2" in str(e.value) and "column" in str(e.value)


@pytest.mark.parametrize("field", ["id", "label", "template"])
def test_missing_label_field(tmp_path, field):
    row = {"id": "5", "label": "pushing cup", "template": "Pushing [something]", "placeholders": ["cup"]}
    del row[field]
    p = tmp_path / "l.json"
    p.write_text(json.dumps([row]))
    with pytest.raises(DataError) as e:
        load_labels(p)
    assert e.value.field == field and str(p) in str(e.value)


@pytest.mark.parametrize("box,what", [((math.nan, 1, 5, 5), "non-finite"), ((9, 1, 5, 5), "x2 < x1"),
                                       ((1, 9, 5, 5), "x2 < x1 or y2 < y1")])
def test_bad_box_rejected_naming_video_and_frame(tmp_path, box, what):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"42": [_entry("42/0003.jpg", [("object 0", box)])]}).replace("NaN", "NaN"))
    with pytest.raises(DataError) as e:
        load_annotations(p)
    msg = str(e.value)
    assert e.value.video_id == "42" and "frame 3" in msg and what in msg and str(p) in msg


def test_missing_box_field_and_bad_video_skipped_in_lenient_mode(tmp_path):
    p = tmp_path / "a.json"
    bad = [{"name": "1/0001.jpg", "labels": [{"gt_annotation": "object 0"}]}]
    good = [_entry("2/0001.jpg", [("object 0", (1, 1, 4, 4))])]
    p.write_text(json.dumps({"1": bad, "2": good}))
    with pytest.raises(DataError) as e:
        load_annotations(p)
    assert e.value.field == "box2d" and e.value.video_id == "1"
    aset = load_annotations(p, strict=False)  # a large run: the bad video is reported, the rest loads
    assert list(aset.videos) == ["2"] and aset.errors[0].video_id == "1"


def test_boxes_outside_frame_are_clipped_and_counted():
    tr = parse_video("3", [_entry("3/0001.jpg", [("object 0", (-10, 5, 50, 300)), ("object 1", (1, 1, 2, 2))])],
                     file="f")
    c = tr.clipped_to(100, 80)
    assert c.clipped == 1
    assert c.tracks["0"][0] == (0.0, 5.0, 50.0, 80.0) and c.tracks["1"][0] == (1.0, 1.0, 2.0, 2.0)


def test_boxes_wholly_outside_the_frame_are_dropped_and_counted():
    tr = parse_video("3", [
        _entry("3/0001.jpg", [("object 0", (10, 10, 20, 20)), ("object 1", (120, 5, 150, 30)),
                              ("object hand", (-30, 10, -5, 40))]),
        _entry("3/0002.jpg", [("object 0", (90, 10, 130, 20)), ("object 1", (100, 79.5, 140, 90)),
                              ("object hand", (5, 80, 15, 95))])], file="f")
    c = tr.clipped_to(100, 80)
    # object 1 is never inside the 100x80 frame; the hand leaves it on frame 1 and touches its edge on frame 2
    assert c.outside == 4 and c.clipped == 1
    assert c.objects(include_hand=True) == ["0"] and c.outside_objects == ["1", "hand"]
    assert c.tracks["0"] == {0: (10.0, 10.0, 20.0, 20.0), 1: (90.0, 10.0, 100.0, 20.0)}
    # clipping a clipped copy again finds nothing new but keeps the counts
    again = c.clipped_to(100, 80)
    assert (again.outside, again.clipped, again.outside_objects) == (4, 1, ["1", "hand"])


def test_frame_name_of_another_video_is_rejected_naming_file_video_and_frame(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"123": [_entry("123/0001.jpg", [("object 0", (1, 1, 4, 4))]),
                                     _entry("456/0002.jpg", [("object 0", (1, 1, 4, 4))])],
                             "7": [_entry("7/0001.jpg", [("object 0", (1, 1, 4, 4))])]}))
    with pytest.raises(DataError) as e:
        load_annotations(p)
    msg = str(e.value)
    assert e.value.video_id == "123" and e.value.field == "name" and str(p) in msg and "456/0002.jpg" in msg
    aset = load_annotations(p, strict=False)  # lenient: that video is reported, the others load
    assert list(aset.videos) == ["7"] and aset.errors[0].video_id == "123"


def test_frame_size_from_the_header_of_each_video_kind(tmp_path):
    from cuelab.data.frame_size import frame_size
    from cuelab.video.io import write_video

    write_video(tmp_path / "5.mp4", np.zeros((3, 48, 64, 3), np.uint8), 12)
    assert frame_size(tmp_path, "5") == (64, 48)
    assert frame_size(fixture_path("something-else", "frames"), "13201") == (320, 240)
    webm = fixture_path("ssv2", "166766.webm")
    assert frame_size(webm.parent, "166766") == (427, 240)
    (tmp_path / "6.webm").write_bytes(b"not a video")
    for vid in ("6", "404"):
        with pytest.raises(DataError) as e:
            frame_size(tmp_path, vid)
        assert e.value.video_id == vid and str(tmp_path) in str(e.value)


def test_inspect_counts_boxes_clipped_and_wholly_outside_on_the_real_fixture_and_on_bad_boxes(tmp_path):
    ann = fixture_path("something-else", "annotations.json")
    frames = fixture_path("something-else", "frames")
    report = inspect_dataset(None, ann, frames)
    # the real boxes all lie inside their frames; three of video 2 end a rounding error past its right edge
    assert report["annotations"]["outside_frame"] == {"boxes_clipped": 3, "boxes_outside_frame": 0, "objects": []}
    assert report["frame_counts"]["2"]["boxes_clipped"] == 3
    # the same video with one object moved wholly off its 427x240 frame
    raw = json.loads(ann.read_text())["2"]
    for entry in raw:
        for lab in entry["labels"]:
            if lab["gt_annotation"] == "object 0":
                lab["box2d"] = {k: v + 500 if k.startswith("x") else v for k, v in lab["box2d"].items()}
    (tmp_path / "a.json").write_text(json.dumps({"2": raw}))
    report = inspect_dataset(None, tmp_path / "a.json", frames)
    moved = sum(1 for e in raw for lab in e["labels"] if lab["gt_annotation"] == "object 0")
    assert report["annotations"]["outside_frame"]["boxes_outside_frame"] == moved > 0
    assert report["annotations"]["outside_frame"]["objects"] == ["2/0"]


@pytest.mark.parametrize("vid,name", [("../etc", "x/0001.jpg"), ("5", "../../etc/0001.jpg"),
                                      ("5", "/etc/0001.jpg"), ("/abs", "abs/0001.jpg")])
def test_paths_that_leave_the_data_folder_are_refused(tmp_path, vid, name):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({vid: [_entry(name, [("object 0", (1, 1, 2, 2))])]}))
    with pytest.raises(DataError, match="leave|absolute|plain name"):
        load_annotations(p, root=tmp_path)
    with pytest.raises(DataError):
        find_video(tmp_path, vid if "/" in vid or ".." in vid else "../" + vid)


def test_safe_join_allows_inside_paths(tmp_path):
    assert safe_join(tmp_path, "a/0001.jpg") == (tmp_path / "a" / "0001.jpg").resolve()


def test_corrupt_and_truncated_videos_give_clear_errors(tmp_path):
    from cuelab.video.io import write_video

    frames = np.random.default_rng(0).integers(0, 255, (12, 32, 48, 3), dtype=np.uint8)
    good = tmp_path / "good.mp4"
    write_video(good, frames, 12)
    data = good.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.webm").write_bytes(b"\x1a\x45\xdf\xa3" + b"not a video" * 50)
    assert read_video(good).n_frames == 12
    for name in ("trunc", "junk"):
        path = next(tmp_path.glob(name + ".*"))
        with pytest.raises(VideoError) as e:
            read_video(path)
        assert e.value.video_id == name and str(path) in str(e.value)


def test_annotations_round_trip_through_writer(tmp_path):
    tr = parse_video("9", [_entry("9/0002.jpg", [("object 0", (1, 2, 3, 4)), ("object hand", (0, 0, 1, 1))])],
                     file="f")
    save_annotations(tmp_path / "a.json", {"9": tr})
    back = load_annotations(tmp_path / "a.json").videos["9"]
    assert back.tracks == tr.tracks and back.objects(include_hand=True) == ["0", "hand"]
