"""The question builder: template grammar, the fairness rules, referential questions, determinism, the CLI,
and the acceptance numbers on the real labels, the Something-Else fixture and the synthetic dataset."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.config import QuestionsConfig
from cuelab.data.normalize import BLANK, clean_placeholder, contains, in_question, noise_reason, normalize, overlaps, words
from cuelab.data.questions import RECORD_KEYS, build_questions, parse_template, read_inputs, write_questions
from cuelab.data.something_else import load_annotations, save_annotations
from cuelab.data.ssv2 import LabelEntry, load_labels, save_labels
from cuelab.tracks import VideoTracks
from cuelab.video.palette import SLOT_COLORS, slot_color_name
from tests.conftest import fixture_path

OBJECTS = ["pen", "cup", "phone", "book", "spoon", "coin", "remote", "bottle", "key", "wallet", "shoe", "box",
           "towel", "glass", "plate", "bag"]
TEMPLATES = ["Pushing [something] from left to right", "Pulling [something] from left to right",
             "Moving [something] from left to right", "Rolling [something] from left to right",
             "Putting [something] into [something]", "Dropping [something] into [something]",
             "Pretending to put [something] into [something]", "Throwing [something] into [something]",
             "Covering [something] with [something]", "[Something] falling like a rock"]


def _labels(n: int = 120) -> list[LabelEntry]:
    out = []
    for i in range(n):
        tpl = TEMPLATES[i % len(TEMPLATES)]
        k = tpl.count("[")
        ph = [OBJECTS[(i * 7 + j * 5) % len(OBJECTS)] for j in range(k)]
        label = tpl
        for p in ph:
            label = label.replace("[something]", p, 1).replace("[Something]", p, 1)
        out.append(LabelEntry(str(1000 + i), label.lower(), tpl, ph))
    return out


def _tracks(vid: str, names: list[str], hand: bool = True) -> VideoTracks:
    tracks = {str(k): {t: (10.0 * k, 10.0, 10.0 * k + 8, 18.0) for t in range(0, 6, 2)} for k in range(len(names))}
    if hand:
        tracks["hand"] = {0: (0.0, 0.0, 5.0, 5.0)}
    cats = {str(k): n for k, n in enumerate(names)}
    return VideoTracks(vid, tracks, cats, list(names), n_entries=3)


def _all(train, test):
    return train + test


# --- normalisation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("The Speaker", "speaker"), ("speakers", "a speaker"), ("  cup   holder ", "cup holder"),
                                  ("glasses", "glass"), ("boxes", "box"), ("batteries", "battery"),
                                  ("а deodorant", "deodorant"), ("Remote-control", "remote control"),
                                  ("hair clip", "hairclip"), ("Nail-polish", "nailpolish"),
                                  ("wrist watch", "wristwatch")])
def test_normalize_merges_spellings_of_one_choice(a, b):
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize("a, b", [("pen", "pencil"), ("cup", "cap"), ("pushing", "pulling"),
                                  ("putting", "pretending to put")])
def test_normalize_keeps_different_choices_apart(a, b):
    assert normalize(a) != normalize(b)


def test_whole_word_containment_and_overlap():
    assert contains("small box", "box") and overlaps("box", "small box")
    assert not contains("boxing gloves", "box") and not overlaps("pen", "pencil")
    # the words either side of the blank never join into a match
    assert not in_question(f"Putting remote {BLANK} control.", "remote control")
    assert in_question(f"Putting {BLANK} into the small box.", "box")
    # spaces aside: compounds written as one word or two are the same object
    assert contains("pink hairclip", "hair clip") and contains("nail polish bottle", "nailpolish")
    assert overlaps("hairclip", "hair clip") and in_question(f"Putting {BLANK} on the hair-clip.", "hairclip")
    assert not contains("hairclipper", "hair clip") and not contains("thumbnail polish", "nail polish")


@pytest.mark.parametrize("text, reason", [("", "empty"), ("   ", "empty"), ("the", "empty"), ("@%", "no_letters"),
                                          ("123", "numbers_only"), ("x" * 41, "too_long"), ("pen", None),
                                          ("3 pens", None)])
def test_noise_reasons(text, reason):
    assert noise_reason(text, max_chars=40) == reason


def test_clean_placeholder():
    assert clean_placeholder('  "Stress  Reliever". ') == "stress reliever"


# --- templates: verb phrase and shape --------------------------------------------------------------------------

@pytest.mark.parametrize("template, verb, shape", [
    ("Pushing [something] from left to right", "pushing", ("{v}", "[x]", "from", "left", "to", "right")),
    ("Pretending to put [something] behind [something]", "pretending to put", ("{v}", "[x]", "behind", "[x]")),
    ("Showing that [something] is empty", "showing", ("{v}", "that", "[x]", "is", "empty")),
    ("[Something] falling like a rock", "falling like a rock", ("[x]", "{v}")),
    ("Putting [something similar to other things that are already on the table]", "putting", ("{v}", "[x]")),
    ("Lifting up one end of [something], then letting it drop down", "lifting up one end of",
     ("{v}", "[x]", ",", "then", "letting", "it", "drop", "down")),
])
def test_verb_phrase_and_shape(template, verb, shape):
    info = parse_template(template)
    assert (info.verb, info.shape) == (verb, shape)


def test_template_without_verb_has_no_verb():
    info = parse_template("Put [something] on a string")
    assert info.verb is None and info.key("exact") is None and info.n_slots == 1


@pytest.mark.parametrize("a, b, level", [
    ("Pushing [something] from left to right", "Pulling [something] from left to right", "exact"),
    ("Covering [something] with [something]", "Lifting [something] with [something] on it", "frame"),
    ("Pushing [something] from left to right", "Moving [something] up", "lead"),
    ("Pushing [something] from left to right", "Putting [something] into [something]", None),  # slot count differs
    ("[Something] falling like a rock", "Pushing [something]", None),  # verb after vs before the object
    ("Showing that [something] is empty", "Holding [something]", None),  # "that" clause vs direct object
])
def test_shape_levels(a, b, level):
    ia, ib = parse_template(a), parse_template(b)
    tightest = next((lvl for lvl in ("exact", "frame", "lead") if ia.key(lvl) == ib.key(lvl)), None)
    assert tightest == level


def test_render_blanks_one_slot_or_the_verb():
    info = parse_template("Putting [something], [something] and [something] on the table")
    assert info.render(["pen", "cup", "key"], blank=1) == f"Putting pen, {BLANK} and key on the table."
    info = parse_template("Pretending to put [something] into [something]")
    assert info.render(["comb", "box"], blank="verb") == f"{BLANK} comb into box."
    assert parse_template("[Something] falling like a rock").render(["tissue"], blank=None) == \
        "Tissue falling like a rock."


# --- the rules on a small label set ----------------------------------------------------------------------------

def _squashed(text: str) -> str:
    """A choice lower-cased without spaces and hyphens, computed here apart from the code under test."""
    return re.sub(r"[\s-]+", "", text.lower())


def _check_rules(rows):
    """Every fairness rule, checked on the rows themselves."""
    for r in rows:
        assert tuple(r) == RECORD_KEYS
        assert r["question"].count(BLANK) == 1
        assert len(r["choices"]) == 4 and r["choices"][r["answer_index"]] == r["answer"]
        keys = [words(c) for c in r["choices"]]
        assert len({normalize(c) for c in r["choices"]}) == 4, r
        assert len({_squashed(c) for c in r["choices"]}) == 4, r  # "hair clip" / "hairclip"
        assert not any(overlaps(keys[i], keys[j]) for i in range(4) for j in range(i + 1, 4)), r
        assert not in_question(r["question"], r["answer"]), r
        assert r["id"].startswith(f"{r['video']}-{r['kind']}-")


def test_built_questions_follow_every_rule():
    labels = _labels()
    # spellings of one object that the first study counted as different choices
    labels += [LabelEntry("2000", "pushing speaker from left to right", TEMPLATES[0], ["speaker"]),
               LabelEntry("2001", "pushing the speaker from left to right", TEMPLATES[0], ["the speaker"]),
               LabelEntry("2002", "pushing speakers from left to right", TEMPLATES[0], ["Speakers"])]
    train, test, m = build_questions(labels, None, QuestionsConfig(kinds=["object", "verb"], test_videos=20))
    rows = _all(train, test)
    _check_rules(rows)
    assert {r["kind"] for r in rows} == {"object", "verb"}
    assert all(v == 0 for v in m["sanity"].values())
    speaker = [r for r in rows if r["kind"] == "object" and any(normalize(c) == "speaker" for c in r["choices"])]
    assert speaker and all(sum(normalize(c) == "speaker" for c in r["choices"]) == 1 for r in speaker)


def test_compounds_written_with_or_without_a_space_are_one_choice():
    # the real labels hold "hair clip"/"hairclip", "nail polish"/"nailpolish", "wrist watch"/"wristwatch"
    spellings = ["hair clip", "hairclip", "hair-clip", "nail polish", "nailpolish", "wrist watch", "wristwatch"]
    labels = _labels() + [LabelEntry(str(4000 + i), f"pushing {p} from left to right", TEMPLATES[0], [p])
                          for i, p in enumerate(spellings * 4)]
    train, test, m = build_questions(labels, None, QuestionsConfig(kinds=["object"], test_videos=20))
    rows = _all(train, test)
    _check_rules(rows)
    assert all(v == 0 for v in m["sanity"].values())
    for key in ("hairclip", "nailpolish", "wristwatch"):
        asked = [r for r in rows if any(_squashed(c) == key for c in r["choices"])]
        assert asked and all(sum(_squashed(c) == key for c in r["choices"]) == 1 for r in asked), key


def test_object_distractors_never_name_another_object_of_the_video():
    labels = _labels() + [LabelEntry("3000", "putting pen into small box", TEMPLATES[4], ["pen", "small box"])]
    train, test, _ = build_questions(labels, None, QuestionsConfig(kinds=["object"], test_videos=10))
    for r in _all(train, test):
        entry = next(e for e in labels if e.id == r["video"])
        others = [p for p in entry.placeholders if normalize(p) != normalize(r["answer"])]
        for c in r["choices"]:
            if c != r["answer"]:
                assert not any(overlaps(c, p) for p in others), (r, c)
    q = next(r for r in _all(train, test) if r["id"] == "3000-object-0")
    assert "box" not in {normalize(c) for c in q["choices"]}  # "box" would be inside "small box"


@pytest.mark.parametrize("seed", range(6))
def test_object_distractors_exclude_overlaps_with_the_scene_and_each_other(seed):
    # slot 0 of this template was typed as: box, cup, coffee cup, key, coin; the asked video holds "small box"
    tpl = "Putting [something] into [something]"
    labels = [LabelEntry(str(i), "x", tpl, [n, "bag"]) for i, n in enumerate(["box", "cup", "coffee cup", "key", "coin"])]
    labels.append(LabelEntry("99", "putting pen into small box", tpl, ["pen", "small box"]))
    train, test, _ = build_questions(labels, None, QuestionsConfig(kinds=["object"], test_videos=1, seed=seed))
    q = next(r for r in train + test if r["id"] == "99-object-0")
    assert "box" not in q["choices"]  # inside "small box", named in the question
    assert not {"cup", "coffee cup"} <= set(q["choices"])  # both could be right
    assert set(q["choices"]) - {"pen"} <= {"cup", "coffee cup", "key", "coin"}


def test_object_distractors_come_from_the_same_template_slot():
    train, test, _ = build_questions(_labels(), None, QuestionsConfig(kinds=["object"], test_videos=10))
    used = Counter()
    for e in _labels():
        for s, p in enumerate(e.placeholders):
            used[(e.template, s, p)] += 1
    for r in _all(train, test):
        s = int(r["id"].rsplit("-", 1)[1])
        assert all(used[(r["template"], s, c)] for c in r["choices"]), r


def test_answer_in_question_and_noise_are_dropped_and_counted():
    labels = _labels() + [
        LabelEntry("4000", "putting pen into pen", TEMPLATES[4], ["pen", "pen"]),
        LabelEntry("4001", "pushing from left to right", TEMPLATES[0], [""]),
        LabelEntry("4002", "pushing @@ from left to right", TEMPLATES[0], ["@@"]),
        LabelEntry("4003", "pushing 42 from left to right", TEMPLATES[0], ["42"]),
        LabelEntry("4004", "pushing x from left to right", TEMPLATES[0], ["very " * 10 + "long"]),
        LabelEntry("4005", "putting pen", TEMPLATES[4], ["pen"]),  # one placeholder for two slots
    ]
    train, test, m = build_questions(labels, None, QuestionsConfig(kinds=["object", "verb"], test_videos=10))
    rows = _all(train, test)
    assert not any(r["video"] == "4000" and r["kind"] == "object" for r in rows)
    assert m["dropped"]["object"]["answer_in_question"] == 2
    assert m["dropped"]["placeholders"] == {"empty": 1, "no_letters": 1, "numbers_only": 1, "too_long": 1}
    assert m["dropped"]["videos"]["noisy_placeholder"] == 4
    assert m["dropped"]["videos"]["placeholder_count_mismatch"] == 1
    assert not {r["video"] for r in rows} & {"4001", "4002", "4003", "4004", "4005"}


def test_verb_distractors_come_from_templates_of_the_same_shape():
    train, test, m = build_questions(_labels(), None, QuestionsConfig(kinds=["verb"], test_videos=10))
    rows = _all(train, test)
    by_verb = {parse_template(t).verb: parse_template(t) for t in TEMPLATES}
    for r in rows:
        info = parse_template(r["template"])
        for c in r["choices"]:
            other = by_verb[c]
            assert any(info.key(lvl) == other.key(lvl) for lvl in ("exact", "frame", "lead")), (r, c)
        if r["verb"] in ("pushing", "pulling", "moving", "rolling"):  # four verbs share this exact shape
            assert {c for c in r["choices"]} == {"pushing", "pulling", "moving", "rolling"}
    # "[Something] falling like a rock" has no other verb of its shape: no verb question, counted
    assert not any(r["template"] == TEMPLATES[-1] for r in rows)
    assert m["dropped"]["verb"]["too_few_same_shape_verbs"] == 12
    # with only exact shapes allowed, the into-templates (4 verbs) still get questions, "Covering" does not
    train, test, m = build_questions(_labels(), None, QuestionsConfig(kinds=["verb"], test_videos=10,
                                                                      verb_shape="exact"))
    templates = {r["template"] for r in _all(train, test)}
    assert "Putting [something] into [something]" in templates and TEMPLATES[8] not in templates
    assert set(m["distractor_sources"]["verb"]) == {"exact"}


def test_answer_positions_are_balanced():
    train, test, m = build_questions(_labels(400), None, QuestionsConfig(kinds=["object", "verb"], test_videos=40))
    for rows in (train, test):
        for kind in ("object", "verb"):
            counts = Counter(r["answer_index"] for r in rows if r["kind"] == kind)
            assert max(counts.values()) - min(counts.values()) <= 1, (kind, counts)
    assert m["answer_positions"]["all"] == [sum(r["answer_index"] == i for r in train + test) for i in range(4)]


# --- referential questions ------------------------------------------------------------------------------------

def test_referential_questions_need_the_cue():
    labels = _labels()
    names = {"1004": ["pen", "cup"], "1005": ["coin", "spoon"], "1000": ["remote"]}
    ann = {vid: _tracks(vid, n) for vid, n in names.items()}
    ann["1008"] = _tracks("1008", ["red book", "plate", "towel"])  # name holding its own cue colour (red)
    train, test, m = build_questions(labels, ann, QuestionsConfig(test_videos=1, require_boxes=True))
    rows = _all(train, test)
    _check_rules(rows)
    assert {r["video"] for r in rows} == set(ann)  # require_boxes keeps only annotated videos
    ref = [r for r in rows if r["kind"] == "referential"]
    assert {r["id"] for r in ref} == {"1004-referential-0", "1004-referential-1", "1005-referential-0",
                                      "1005-referential-1", "1008-referential-1", "1008-referential-2"}
    for r in ref:
        color = slot_color_name(int(r["target_object"]))
        assert r["question"] == f"The object marked in {color} is {BLANK}."
        scene = [n for n in ann[r["video"]].categories.values() if n != r["answer"]]
        assert r["answer"] == ann[r["video"]].categories[r["target_object"]]
        # the other objects of the same scene are among the choices (the text alone cannot decide)
        assert any(c in scene for c in r["choices"] if c != r["answer"])
        assert not any(contains(c, color) for c in r["choices"])
        assert r["cue_colors"] == {o: slot_color_name(int(o)) for o in ann[r["video"]].objects()}
        assert "hand" not in r["cue_colors"]
    assert m["dropped"]["referential"] == {"cue_colour_in_answer": 1, "fewer_than_two_objects": 1}
    obj = next(r for r in rows if r["id"] == "1004-object-1")
    assert obj["target_object"] == "1" and "blue" in obj["hint"]


def test_scene_object_questions_name_every_object_and_no_distractor_is_in_the_scene():
    labels = _labels()
    names = {"1004": ["pen", "cup"], "1005": ["coin", "spoon"], "1000": ["remote"]}
    ann = {vid: _tracks(vid, n) for vid, n in names.items()}
    cfg = QuestionsConfig(test_videos=1, kinds=["object", "scene_object"])
    train, test, _ = build_questions(labels, ann, cfg)
    rows = _all(train, test)
    _check_rules(rows)
    scene = [r for r in rows if r["kind"] == "scene_object"]
    # still objects too (the label of 1004 names only the first): one question per named object
    assert sorted((r["video"], r["answer"]) for r in scene) == sorted(
        (v, n) for v, ns in names.items() for n in ns)
    for r in scene:
        assert r["question"] == f"One of the objects in the video is {BLANK}."
        assert not set(r["choices"]) - {r["answer"]} & set(names[r["video"]])
    # the kind added last leaves the other kinds' questions as they were
    alone, _, _ = build_questions(labels, ann, cfg.model_copy(update={"kinds": ["object"]}))
    assert [r for r in train if r["kind"] == "object"] == alone


def test_object_wholly_outside_the_frame_gets_no_referential_question_and_no_hint(tmp_path):
    from cuelab.video.io import write_video

    labels = _labels()
    ann = {"1004": _tracks("1004", ["pen", "cup"]), "1008": _tracks("1008", ["book", "plate", "towel"])}
    for vid, obj in (("1004", "1"), ("1008", "2")):  # moved past the right edge of the 100x80 frame
        ann[vid].tracks[obj] = {t: (x1 + 200, y1, x2 + 200, y2) for t, (x1, y1, x2, y2) in ann[vid].tracks[obj].items()}
        write_video(tmp_path / "videos" / f"{vid}.mp4", np.zeros((2, 80, 100, 3), np.uint8), 12)
    save_labels(tmp_path / "labels.json", labels)
    save_annotations(tmp_path / "ann.json", ann)
    cfg = QuestionsConfig(test_videos=1, require_boxes=True)
    # without the videos the reader cannot know the frame: every object is asked about
    _, unclipped, _ = read_inputs(tmp_path / "labels.json", tmp_path / "ann.json")
    before = {r["id"] for r in _all(*build_questions(labels, unclipped, cfg)[:2]) if r["kind"] == "referential"}
    assert {"1004-referential-1", "1008-referential-2"} <= before
    entries, tracks, report = read_inputs(tmp_path / "labels.json", tmp_path / "ann.json", tmp_path / "videos")
    train, test, m = build_questions(entries, tracks, cfg)
    rows = {r["id"]: r for r in _all(train, test)}
    _check_rules(rows.values())
    assert {i for i, r in rows.items() if r["kind"] == "referential"} == {"1008-referential-0", "1008-referential-1"}
    assert m["dropped"]["referential"]["fewer_than_two_objects"] == 1  # 1004 has one object left in view
    # the object question about the unseen object neither names a cue colour nor hints at one
    assert rows["1004-object-1"]["target_object"] is None and rows["1004-object-1"]["hint"] == ""
    assert rows["1004-object-0"]["target_object"] == "0" and "red" in rows["1004-object-0"]["hint"]
    assert "2" not in rows["1008-object-0"]["cue_colors"] and "2" not in rows["1008-referential-0"]["cue_colors"]
    frames = report["frames"]
    assert (frames["boxes_outside_frame"], frames["objects_outside_frame"]) == (6, 2)
    assert frames["objects_outside_first"] == ["1004/1", "1008/2"] and frames["videos_without_size"] == 0
    # the CLI does the same with --video-dir, and the manifest keeps the counts
    res = CliRunner().invoke(app, ["questions", "--labels", str(tmp_path / "labels.json"), "--annotations",
                                   str(tmp_path / "ann.json"), "--video-dir", str(tmp_path / "videos"), "--out",
                                   str(tmp_path / "q"), "--test-videos", "1", "--require-boxes"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    written = [json.loads(x) for f in ("train.jsonl", "test.jsonl")
               for x in (tmp_path / "q" / f).read_text().splitlines()]
    assert {r["id"] for r in written if r["kind"] == "referential"} == {"1008-referential-0", "1008-referential-1"}
    assert m["inputs"]["frames"]["objects_outside_frame"] == 2


def test_something_else_fixture_gives_referential_questions_for_multi_object_videos():
    labels = load_labels(fixture_path("something-else", "labels.json"))
    ann = load_annotations(fixture_path("something-else", "annotations.json")).videos
    train, test, m = build_questions(labels, ann, QuestionsConfig(test_videos=1))
    rows = _all(train, test)
    _check_rules(rows)
    multi = {e.id for e in labels if e.id in ann and len(ann[e.id].objects()) >= 2}
    assert multi == {"57082"}
    ref = {r["answer"]: r for r in rows if r["kind"] == "referential"}
    assert set(ref) == {"comb", "box"}
    assert "box" in ref["comb"]["choices"] and "comb" in ref["box"]["choices"]
    assert ref["comb"]["question"] == f"The object marked in red is {BLANK}."


def test_synthetic_dataset_gives_all_kinds_and_referential_for_every_multi_object_scene(tmp_path):
    from cuelab.config import SyntheticConfig
    from cuelab.data.synthetic import generate

    generate(SyntheticConfig(videos=60), tmp_path)
    labels, ann, _ = read_inputs(tmp_path / "labels.json", tmp_path / "annotations.json")
    train, test, m = build_questions(labels, ann, QuestionsConfig(test_videos=10))
    rows = _all(train, test)
    _check_rules(rows)
    assert {r["kind"] for r in rows} == {"object", "verb", "referential"}
    multi = {v for v, t in ann.items() if len(t.objects()) >= 2}
    assert multi and multi <= {r["video"] for r in rows if r["kind"] == "referential"}
    assert set(m["per_kind"]["test"]) == {"object", "verb", "referential"}


# --- split, determinism, files --------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    labels = _labels(300)
    cfg = QuestionsConfig(kinds=["object", "verb"], test_videos=30, seed=5)
    for name in ("a", "b"):
        write_questions(tmp_path / name, *build_questions(labels, None, cfg))
    for f in ("train.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["files"]["test.jsonl"] == hashlib.sha256((tmp_path / "a" / "test.jsonl").read_bytes()).hexdigest()
    train, test, _ = build_questions(labels, None, cfg.model_copy(update={"seed": 6}))
    test_a = {json.loads(line)["video"] for line in (tmp_path / "a" / "test.jsonl").read_text().splitlines()}
    assert {r["video"] for r in test} != test_a
    assert not {r["video"] for r in train} & {r["video"] for r in test}


def test_subset_and_test_split_are_stratified_by_template():
    labels = _labels(400)  # 40 videos per template
    train, test, m = build_questions(labels, None, QuestionsConfig(kinds=["object"], videos=200, test_videos=50))
    assert m["videos"]["selected"] == 200 and m["videos"]["test"] == 50
    per_template = Counter(r["template"] for r in test if r["id"].endswith("-object-0"))
    assert set(per_template.values()) == {5}  # 10 templates, 5 test videos each


# --- the CLI ---------------------------------------------------------------------------------------------------

def test_cli_writes_the_three_files_and_skips_a_bad_label(tmp_path):
    labels = _labels()
    save_labels(tmp_path / "labels.json", labels)
    raw = json.loads((tmp_path / "labels.json").read_text())
    raw.append({"id": "9999", "label": "no template"})  # reported and skipped, not fatal
    (tmp_path / "labels.json").write_text(json.dumps(raw))
    save_annotations(tmp_path / "ann.json", {"1004": _tracks("1004", ["pen", "cup"]),
                                             "1005": _tracks("1005", ["coin", "spoon"]),
                                             "1006": _tracks("1006", ["phone"])})
    res = CliRunner().invoke(app, ["questions", "--labels", str(tmp_path / "labels.json"), "--annotations",
                                   str(tmp_path / "ann.json"), "--out", str(tmp_path / "q"), "--test-videos", "1",
                                   "--seed", "3", "--kinds", "object,referential"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert m["inputs"]["label_errors"] == 1 and m["inputs"]["errors"][0]["video_id"] == "9999"
    assert m["config"]["seed"] == 3 and m["config"]["kinds"] == ["object", "referential"]
    rows = [json.loads(x) for f in ("train.jsonl", "test.jsonl") for x in (tmp_path / "q" / f).read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"object", "referential"}
    assert len(rows) == m["questions"]["train"] + m["questions"]["test"] and m["videos"]["test"] == 1


def test_cli_names_the_file_on_bad_input(tmp_path):
    (tmp_path / "labels.json").write_text('{"not": "a list"}')
    res = CliRunner().invoke(app, ["questions", "--labels", str(tmp_path / "labels.json"), "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "labels.json" in res.output.replace("\n", "")
    res = CliRunner().invoke(app, ["questions", "--labels", str(tmp_path / "labels.json"), "--out",
                                   str(tmp_path / "q"), "--kinds", "object,colour"])
    assert res.exit_code != 0


# --- acceptance on the real 12,467 labels ---------------------------------------------------------------------

def test_real_labels_acceptance(tmp_path):
    path = fixture_path("ssv2", "base_validation_set.json")
    labels, _, _ = read_inputs(path)  # how long this takes: benchmarks/wall_clock.py
    train, test, m = build_questions(labels, None, QuestionsConfig(kinds=["object", "verb"], test_videos=2000))
    rows = _all(train, test)
    assert len(labels) == 12467 and len(rows) > 25000
    _check_rules(rows)
    assert all(v == 0 for v in m["sanity"].values()), m["sanity"]
    share = [n / len(rows) for n in m["answer_positions"]["all"]]
    assert all(0.22 <= s <= 0.28 for s in share), share
    # every verb distractor comes from a template of the same shape (at one of the three levels)
    infos = [parse_template(t) for t in {e.template for e in labels}]
    for r in (r for r in rows if r["kind"] == "verb"):
        info = parse_template(r["template"])
        for c in r["choices"]:
            assert any(o.verb == c and any(o.key(lvl) == info.key(lvl) for lvl in ("exact", "frame", "lead"))
                       for o in infos), (r, c)
    assert m["per_kind"]["test"]["verb"] > 1000 and m["per_kind"]["test"]["object"] > 1000
