"""The embedded synthetic dataset: real formats, read back through the readers, deterministic."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.config import SyntheticConfig
from cuelab.data.something_else import load_annotations
from cuelab.data.ssv2 import load_labels
from cuelab.data.synthetic import OBJECT_NAMES, all_templates, generate, make_scene
from cuelab.video.io import find_video, read_video


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_every_file_loads_through_the_readers(synth_dir):
    labels = load_labels(synth_dir / "labels.json")
    ann = load_annotations(synth_dir / "annotations.json", root=synth_dir / "videos")
    assert len(labels) == 24 and set(ann.videos) == {e.id for e in labels} and not ann.errors
    for e in labels:
        v = read_video(find_video(synth_dir / "videos", e.id))
        assert (v.width, v.height) == (160, 120) and v.fps == 12.0 and 24 <= v.n_frames <= 48
        tr = ann.videos[e.id]
        assert 2 <= len(tr.objects()) <= 4 and "hand" in tr.tracks
        assert len(e.placeholders) == e.template.count("[something]")
        assert [tr.categories[str(k)] for k in range(len(e.placeholders))] == e.placeholders
        assert e.label == e.template.lower().replace("[something]", "{}").format(*e.placeholders)
        assert tr.last_frame < v.n_frames


def test_gaps_option_leaves_frames_out_of_the_annotation_lists(synth_dir):
    raw = json.loads((synth_dir / "annotations.json").read_text())
    with_gaps = [v for v in raw.values() if len(v) < int(v[-1]["name"].split("/")[1][:4])]
    assert with_gaps, "gaps=0.1 should leave some frames out"


def test_vocabulary_and_templates_are_rich_enough():
    assert len(set(OBJECT_NAMES)) >= 16
    templates = all_templates()
    assert len(templates) >= 12
    assert {t.slots for t in templates} == {1, 2}
    verbs = {t.verb for t in templates}
    assert {"pushing", "lifting", "dropping", "putting", "covering", "rolling", "poking", "turning"} <= verbs


def test_acted_on_object_moves_with_the_hand_and_others_do_not_always_move():
    cfg = SyntheticConfig(videos=30, seed=1)
    templates = [t for t in all_templates() if t.path == "left_right"]
    still = 0
    for i in range(10):
        scene = make_scene(i, cfg, templates)
        tr, frames = scene.tracks, scene.frames
        boxes = tr.tracks["0"]
        first, last = boxes[min(boxes)], boxes[max(boxes)]
        assert (last[0] + last[2]) / 2 - (first[0] + first[2]) / 2 > 0.4 * cfg.width  # left to right
        hand = tr.tracks["hand"]
        assert set(hand) & set(boxes)
        others = [o for o in tr.objects() if o != "0"]
        for o in others:
            b = tr.tracks[o]
            still += abs(b[max(b)][0] - b[min(b)][0]) < 1e-6
    assert still > 0  # some bystanders stay still ...
    assert frames.dtype == np.uint8


def test_same_seed_same_bytes_and_cli(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        r = runner.invoke(app, ["synth", "--out", str(tmp_path / name), "--videos", "6", "--seed", "5"])
        assert r.exit_code == 0, r.output
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate(SyntheticConfig(videos=6, seed=6), tmp_path / "c")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _centre_x(box):
    return (box[0] + box[2]) / 2


def test_single_object_scenes_for_every_one_slot_template():
    cfg = SyntheticConfig(videos=40, seed=2, min_objects=2, max_objects=3, single_object_fraction=1.0)
    templates = [t for t in all_templates() if t.slots == 1]
    for i in range(24):
        scene = make_scene(i, cfg, templates)
        entry, tr, frames = scene.entry, scene.tracks, scene.frames
        assert tr.objects() == ["0"] and len(entry.placeholders) == 1  # the acted-on object alone
        assert len(tr.tracks["0"]) == len(frames)


def test_motion_and_object_scale_make_the_action_larger():
    shaking = [t for t in all_templates() if t.key == "shaking"]

    def measure(**kw):
        cfg = SyntheticConfig(videos=10, seed=4, **kw)
        swings, sizes = [], []
        for i in range(6):
            tr = make_scene(i, cfg, shaking).tracks
            xs = [_centre_x(b) for b in tr.tracks["0"].values()]
            swings.append(max(xs) - min(xs))
            sizes.append(np.median([b[2] - b[0] for b in tr.tracks["0"].values()]))
        return np.mean(swings), np.mean(sizes)

    swing1, size1 = measure()
    swing2, _ = measure(motion_scale=2.0)
    _, size2 = measure(object_scale=1.5)
    assert swing2 > 1.8 * swing1 and swing1 > 10  # a shake the 2 fps sampling still sees
    assert 1.4 * size1 < size2 < 1.6 * size1


def test_objects_and_hand_that_leave_the_frame_get_no_box_there(tmp_path):
    # shakes eight times the default amplitude swing objects off the 160x120 frame, and a hand pushing
    # something closer from the frame's edge starts outside it
    cfg = SyntheticConfig(videos=24, seed=1, motion_scale=8.0,
                          templates=["shaking", "pushing_closer", "rolling_closer"])
    generate(cfg, tmp_path)
    raw = json.loads((tmp_path / "annotations.json").read_text())
    boxes = [(vid, e["name"], lab["gt_annotation"], lab["box2d"]) for vid, entries in raw.items()
             for e in entries for lab in e["labels"]]
    assert len(boxes) > 1000
    for vid, name, obj, b in boxes:
        assert b["x2"] > b["x1"] and b["y2"] > b["y1"], (name, obj, b)
        assert 0 <= b["x1"] < 160 and 0 <= b["y1"] < 120 and 0 < b["x2"] <= 160 and 0 < b["y2"] <= 120, (name, obj, b)
    # objects did leave the frame: the acted-on object is drawn on every frame, yet some frames have no box for it
    ann = load_annotations(tmp_path / "annotations.json").videos
    missing = sum(read_video(find_video(tmp_path / "videos", vid)).n_frames - len(tr.tracks.get("0", {}))
                  for vid, tr in ann.items())
    assert missing > 0
