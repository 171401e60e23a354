"""Two-actor scenes and the `referential_verb` kind: both actors really move, each in its own way, at the
model's view; the default dataset is unchanged; the questions ask about the marked object's action, with the
other actor's among the distractors; determinism, the other kinds unchanged, and the side file's errors."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import cv2
import numpy as np
import pytest

from cuelab.config import QuestionsConfig, SyntheticConfig
from cuelab.data.normalize import BLANK
from cuelab.data.questions import (ObjectVocab, Tally, UsableVideo, VerbVocab, Vocabularies, build_questions,
                                   read_actions, read_inputs, video_questions)
from cuelab.data.ssv2 import LabelEntry
from cuelab.data.synthetic import generate, make_scene, select_templates
from cuelab.errors import DataError
from cuelab.tracks import VideoTracks

IN_PLACE = ["lifting", "dropping", "spinning", "shaking", "poking", "squeezing"]
# the demo's scenes (configs/demo.yaml) with every free bystander acting
DEMO_SCENES = dict(videos=40, seed=0, min_objects=2, max_objects=3, templates=IN_PLACE, motion_scale=2.0)


# --- the generator --------------------------------------------------------------------------------------------

def _model_view(frames: np.ndarray, w: int = 96, h: int = 64) -> tuple[list[int], np.ndarray]:
    """8 frames evenly over the clip at 96x64, as the demo's models see them (2 fps, max 8 frames)."""
    idx = [int(round(x)) for x in np.linspace(0, len(frames) - 1, 8)]
    return idx, np.stack([cv2.resize(frames[t], (w, h), interpolation=cv2.INTER_AREA) for t in idx]).astype(float)


def _signature(scene, oid: str) -> dict:
    """How object `oid` moves at the model's view: the mean frame-to-frame pixel change inside its boxes, and
    its box centre's path and box area over the sampled frames (in 96x64 pixels)."""
    idx, view = _model_view(scene.frames)
    s = np.array([96 / scene.frames.shape[2], 64 / scene.frames.shape[1]] * 2)
    boxes = np.array([scene.tracks.tracks[oid][t] for t in idx]) * s
    x1, y1 = np.floor(boxes[:, :2].min(0)).astype(int).clip(0)
    x2, y2 = np.ceil(boxes[:, 2:].max(0)).astype(int)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return {"pixels": float(np.abs(np.diff(view[:, y1:y2, x1:x2], axis=0)).mean()),
            "path": centre - centre[0], "area": area / area[0]}


def test_two_actor_scenes_move_both_objects_each_in_its_own_way():
    cfg = SyntheticConfig(**DEMO_SCENES, two_actor_fraction=1.0)
    templates = select_templates(cfg)
    seen, moving, still = 0, [], []
    for i in range(12):
        scene = make_scene(i, cfg, templates)
        if scene.actions is None:  # one-object scenes have no bystander to act
            assert len(scene.tracks.objects()) == 1
            continue
        seen += 1
        actors = sorted(scene.actions)
        assert len(actors) == 2 and len(set(scene.actions.values())) == 2
        assert scene.entry.template.lower().startswith(scene.actions["0"])  # the label stays object 0's
        sig = {o: _signature(scene, o) for o in scene.tracks.objects()}
        for o in actors:  # a still object's region does not change at all (the background is drawn once)
            assert sig[o]["pixels"] > 2.0, (i, o, scene.actions[o], sig[o]["pixels"])
            # spinning a ball or ring shows only in its stripe: the weakest motion (see the report's numbers)
            (moving if scene.actions[o] != "spinning" else []).append(sig[o]["pixels"])
        still += [sig[o]["pixels"] for o in scene.tracks.objects() if o not in actors]
        a, b = (sig[o] for o in actors)  # two different motions: different box paths or box sizes over time
        assert not (np.allclose(a["path"], b["path"], atol=0.5) and np.allclose(a["area"], b["area"], atol=0.05))
    assert seen >= 6
    assert min(moving) > 6.0 and np.median(moving) > 4 * np.median(still), (moving, still)


def test_second_actor_uses_its_own_stream_the_rest_of_the_scene_is_unchanged():
    base, two = SyntheticConfig(**DEMO_SCENES), SyntheticConfig(**DEMO_SCENES, two_actor_fraction=0.5)
    templates = select_templates(base)
    n_two = 0
    for i in range(10):
        a, b = make_scene(i, base, templates), make_scene(i, two, templates)
        assert a.actions is None and a.entry == b.entry and a.gaps == b.gaps
        still = [o for o in a.tracks.tracks if o not in (b.actions or {}) or o == "0"]
        assert all(a.tracks.tracks[o] == b.tracks.tracks[o] for o in still)  # the labelled actor, hand, bystanders
        if b.actions is None:
            assert np.array_equal(a.frames, b.frames)
        n_two += b.actions is not None
    assert 0 < n_two < 10


def _files(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_default_writes_the_same_bytes_as_without_the_field(tmp_path):
    raw = dict(videos=5, seed=3, gaps=0.1)
    generate(SyntheticConfig.model_validate(raw), tmp_path / "absent")
    generate(SyntheticConfig.model_validate({**raw, "two_actor_fraction": 0.0}), tmp_path / "zero")
    assert _files(tmp_path / "absent") == _files(tmp_path / "zero")
    assert not (tmp_path / "zero" / "actions.json").exists()
    summary = json.loads((tmp_path / "zero" / "synth_summary.json").read_text())
    assert "two_actor_fraction" not in summary["config"]


def test_actions_file_lists_every_two_actor_video(tmp_path):
    cfg = SyntheticConfig(**{**DEMO_SCENES, "videos": 8}, two_actor_fraction=1.0)
    generate(cfg, tmp_path)
    acts = read_actions(tmp_path / "labels.json")
    scenes = {s.entry.id: s.actions for s in (make_scene(i, cfg, select_templates(cfg)) for i in range(8))}
    assert acts == {vid: a for vid, a in scenes.items() if a}


# --- the questions --------------------------------------------------------------------------------------------

VERBS = ["lifting", "spinning", "shaking", "poking", "squeezing"]
NAMES = ["red cube", "blue ball", "green ring", "pink ball", "orange cube", "purple triangle"]


def _dataset(n: int = 20) -> tuple[list[LabelEntry], dict[str, VideoTracks]]:
    """n one-slot in-place videos (video i does VERBS[i % 5] to object 0) of three objects each."""
    labels, ann = [], {}
    for i in range(n):
        vid, verb = str(2000 + i), VERBS[i % len(VERBS)]
        names = [NAMES[(i + k) % len(NAMES)] for k in range(3)]
        labels.append(LabelEntry(vid, f"{verb} {names[0]}", f"{verb.capitalize()} [something]", [names[0]]))
        tracks = {str(k): {t: (20.0 * k, 10.0, 20.0 * k + 8, 18.0) for t in range(4)} for k in range(3)}
        ann[vid] = VideoTracks(vid, tracks, {str(k): n for k, n in enumerate(names)},
                               [names[0]], n_entries=4)
    return labels, ann


ACTIONS = {"2000": {"0": "lifting", "2": "spinning"},   # two actors: one question each
           "2001": {"0": "spinning", "1": "spinning"},  # the same action twice: none
           "2002": {"0": "shaking"}}                    # one actor: none; videos not listed: one actor too
CFG = QuestionsConfig(test_videos=5, kinds=["object", "verb", "referential", "referential_verb"])


def _rv(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "referential_verb"]


def test_questions_ask_about_the_marked_objects_action():
    labels, ann = _dataset()
    train, test, m = build_questions(labels, ann, CFG, ACTIONS)
    rows = _rv(train + test)
    assert sorted(r["id"] for r in rows) == ["2000-referential_verb-0", "2000-referential_verb-2"]
    for r, color, other in zip(sorted(rows, key=lambda r: r["id"]), ("red", "green"), ("spinning", "lifting")):
        assert r["question"] == f"What is being done to the object marked in {color}? {BLANK}"
        assert r["answer"] == ACTIONS["2000"][r["target_object"]] and r["choices"][r["answer_index"]] == r["answer"]
        assert other in r["choices"] and len(set(r["choices"])) == 4
        assert set(r["choices"]) <= set(VERBS)  # the rest: verbs of the same template shape
        assert r["cue_colors"][r["target_object"]] == color and color in r["hint"]
    assert m["dropped"]["referential_verb"] == {"fewer_than_two_actors": 18, "same_action": 1}
    assert m["distractor_sources"]["referential_verb"] == {"exact": 4, "scene": 2}
    assert m["per_kind"]["train"].get("referential_verb", 0) + m["per_kind"]["test"].get("referential_verb", 0) == 2


def test_the_other_actors_verb_is_the_first_distractor():
    labels, ann = _dataset()
    vocab = Vocabularies(ObjectVocab().freeze(), VerbVocab(Counter(e.template for e in labels)))
    tally = Tally.for_kinds(["referential_verb"])
    rows = video_questions(UsableVideo(labels[0], labels[0].placeholders), ann["2000"], vocab,
                           QuestionsConfig(kinds=["referential_verb"]), tally, ACTIONS["2000"])
    assert [r["choices"][:2] for r in rows] == [["lifting", "spinning"], ["spinning", "lifting"]]


def test_without_actions_the_kind_yields_nothing_and_says_why():
    labels, ann = _dataset()
    train, test, m = build_questions(labels, ann, CFG)
    assert not _rv(train + test) and m["dropped"]["referential_verb"] == {"actions_unknown": 20}


def test_deterministic_and_the_other_kinds_unchanged():
    labels, ann = _dataset()
    one = build_questions(labels, ann, CFG, ACTIONS)
    assert build_questions(labels, ann, CFG, ACTIONS) == one
    old = build_questions(labels, ann, CFG.model_copy(update={"kinds": ["object", "verb", "referential"]}))
    assert [r for r in one[0] + one[1] if r["kind"] != "referential_verb"] == old[0] + old[1]


def test_synthetic_set_end_to_end(tmp_path):
    cfg = SyntheticConfig(**{**DEMO_SCENES, "videos": 16}, two_actor_fraction=1.0)
    generate(cfg, tmp_path)
    labels, ann, _ = read_inputs(tmp_path / "labels.json", tmp_path / "annotations.json", tmp_path / "videos")
    acts = read_actions(tmp_path / "labels.json")
    train, test, m = build_questions(labels, ann, CFG, acts)
    rows = _rv(train + test)
    assert len(rows) == 2 * len(acts)  # both actors of every two-actor scene
    for r in rows:
        assert r["answer"] == acts[r["video"]][r["target_object"]]
        assert set(acts[r["video"]].values()) <= set(r["choices"])


@pytest.mark.parametrize("content, video, field", [
    ('{"2000": {"0": "lifting", "x": "spinning"}}', "2000", "x"),
    ('{"2000": {"0": "lifting", "1": ""}}', "2000", "1"),
    ('{"2000": {"0": "lifting", "1": 3}}', "2000", "1"),
    ('{"2001": []}', "2001", "actions"),
    ('{"2001": {}}', "2001", "actions"),
    ('["2000"]', None, None),
])
def test_malformed_actions_file_names_file_video_and_field(tmp_path, content, video, field):
    (tmp_path / "actions.json").write_text(content)
    with pytest.raises(DataError) as e:
        read_actions(tmp_path / "labels.json")
    assert e.value.file == str(tmp_path / "actions.json")
    assert (e.value.video_id, e.value.field) == (video, field)


def test_no_actions_file_reads_as_unknown(tmp_path):
    assert read_actions(tmp_path / "labels.json") is None
