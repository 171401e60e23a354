"""The first study's question protocol: the same questions as the study's own code on the real SSv2 labels
(split by split, everything but the distractors), and each rule of the protocol on small cases."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from cuelab.data.first_study_protocol import (blanked, build_first_study_questions, draw_choices, label_pool,
                                              read_label_pool, study_template)
from cuelab.data.questions import RECORD_KEYS, write_questions
from cuelab.data.ssv2 import LabelEntry
from cuelab.errors import DataError
from tests.conftest import fixture_path

REFERENCE = Path(__file__).parent / "data" / "first_study_protocol_reference.json"


def _digest(rows: list[dict]) -> dict:
    """The reference's reduction of one split (see its "what")."""
    lines = sorted(json.dumps([r["video"], r["kind"], r["question"], r["answer"]], ensure_ascii=False)
                   for r in rows)
    return {"rows": len(rows), "videos": len({r["video"] for r in rows}),
            "per_kind": dict(sorted(Counter(r["kind"] for r in rows).items())),
            "two_blanks": sum("two_blanks" in r["flags"] for r in rows),
            "sha256": hashlib.sha256("".join(x + "\n" for x in lines).encode()).hexdigest()}


@pytest.mark.parametrize("mode", ["all_labels", "first_10000_ids"])
def test_same_questions_as_the_study_code_on_real_labels(mode, tmp_path):
    labels = fixture_path("ssv2", "base_validation_set.json")
    ref = json.loads(REFERENCE.read_text())["modes"][mode]
    annotations = None
    if mode == "first_10000_ids":  # an annotation file holding the label ids, as the reference was made
        annotations = tmp_path / "annotations.json"
        annotations.write_text(json.dumps({e["id"]: [] for e in json.loads(labels.read_text())}))
    pool, report = read_label_pool([labels], annotations)
    assert report["label_errors"] == 0
    train, test, manifest = build_first_study_questions(pool, seed=0)
    for split, rows in (("train", train), ("test", test)):
        assert _digest(rows) == ref[split], split
    # the rows are cuelab question records, written and read like any other question set
    write_questions(tmp_path / "q", train, test, manifest)
    back = [json.loads(x) for x in (tmp_path / "q" / "test.jsonl").read_text().splitlines()]
    assert [tuple(r) for r in back[:1]] == [RECORD_KEYS] and back == test
    if mode == "all_labels":  # the study's choices repeat a string now and then; flagged, never dropped
        assert 0 < manifest["flags"]["duplicate_choices"] < len(test) + len(train)


def test_template_filter():
    assert study_template("Putting [something] on [something]") == ("[doing] [something] on [something]", "putting")
    # the first -ing word after "something" is removed: "something" itself is never the verb
    assert study_template("[Something] falling like a rock") == ("[something] [doing] like a rock", "falling")
    assert study_template("Pretending to be tearing [something that is not tearable]") is None  # another slot
    assert study_template("Poking a stack of [something] so the stack collapses") == (
        "[doing] a stack of [something] so the stack collapses", "poking")
    assert study_template("Showing [something] to the camera") == ("[doing] [something] to the camera", "showing")
    assert study_template("[Something] colliding with [something] and both are being deflected") == (
        "[something] [doing] with [something] and both are being deflected", "colliding")
    assert study_template("Stuff [something]") is None  # no -ing word
    assert study_template("Nothing here") is None  # no slot


def test_questions_text_and_two_blanks():
    doing, verb = study_template("Spinning [something] so it continues spinning")
    assert blanked(doing, ["a top"], verb) == [
        ("object", "a top", "spinning _____ so it continues spinning"),
        ("verb", "spinning", "_____ a top so it continues _____")]
    entry = LabelEntry("7", "spinning a top so it continues spinning", "Spinning [something] so it continues spinning",
                       ["a top"])
    other = LabelEntry("8", "dropping pen into cup", "Dropping [something] into [something]", ["pen", "Cup"])
    _, test, manifest = build_first_study_questions([entry, other], seed=0, test_videos=2)
    by_id = {r["id"]: r for r in test}
    assert by_id["7-verb-0"]["flags"].count("two_blanks") == 1 and "two_blanks" not in by_id["7-object-0"]["flags"]
    # placeholders are filled in as typed; the template is lower case; no full stop
    assert by_id["8-object-1"]["question"] == "dropping pen into _____" and by_id["8-object-1"]["answer"] == "Cup"
    assert by_id["8-verb-0"]["question"] == "_____ pen into Cup" and by_id["8-verb-0"]["answer"] == "dropping"
    assert manifest["flags"]["two_blanks"] == 1


def test_choices_with_replacement_seeded_and_duplicates_kept():
    counts = Counter()
    for i in range(2000):
        choices = draw_choices("b", ["a", "b"], random.Random(i))
        assert sorted(choices).count("b") >= 1 and len(choices) == 4
        counts[len(set(choices))] += 1
    assert counts[1] > 0 and counts[2] > 0  # all four "b" happens (1/8), as with the study's random.choice
    entries = [LabelEntry(str(i), "x", "Dropping [something] into [something]", [f"o{i}", f"p{i}"]) for i in range(40)]
    a = build_first_study_questions(entries, seed=3, test_videos=10)
    assert a == build_first_study_questions(entries, seed=3, test_videos=10)  # reproducible
    b = build_first_study_questions(entries, seed=4, test_videos=10)
    assert [r["choices"] for r in a[1]] != [r["choices"] for r in b[1]]
    assert [(r["question"], r["answer"]) for r in a[1]] == [(r["question"], r["answer"]) for r in b[1]]
    for r in a[0] + a[1]:
        assert r["choices"][r["answer_index"]] == r["answer"]
        others = {"object": {f"o{i}" for i in range(40)} | {f"p{i}" for i in range(40)}, "verb": {"dropping"}}
        assert set(r["choices"]) <= others[r["kind"]]
    verbs = [r for r in a[1] if r["kind"] == "verb"]  # a one-verb pool: every choice is the answer
    assert all(r["choices"] == ["dropping"] * 4 and "answer_repeated" in r["flags"] for r in verbs)


def test_split_is_first_videos_in_pool_order():
    entries = [LabelEntry(str(i), "x", "Holding [something]", [f"o{i}"]) for i in (5, 3, 9, 1)]
    entries.insert(1, LabelEntry("2", "x", "Pretending to be tearing [something that is not tearable]", ["y"]))
    train, test, manifest = build_first_study_questions(entries, seed=0, test_videos=2)
    assert [r["video"] for r in test if r["kind"] == "verb"] == ["5", "3"]
    assert [r["video"] for r in train if r["kind"] == "verb"] == ["9", "1"]
    assert manifest["dropped"]["videos"] == {"slot_not_something": 1}
    with pytest.raises(DataError, match="template filter"):
        build_first_study_questions(entries[1:2], seed=0)


def test_label_pool_first_ids_in_string_order_train_then_validation():
    train = [LabelEntry("9", "a", "T", []), LabelEntry("10", "b", "T", []), LabelEntry("100", "c", "T", [])]
    val = [LabelEntry("2", "d", "T", []), LabelEntry("10", "e", "T", [])]
    # ids in string order: "10" < "100" < "2" < "9"; the first 3 keep 10, 100, 2
    pool = label_pool([train, val], annotation_ids=["9", "2", "100", "10"], first_ids=3)
    assert [(e.id, e.label) for e in pool] == [("10", "e"), ("100", "c"), ("2", "d")]  # "10": first place, last entry
    assert [e.id for e in label_pool([train, val])] == ["9", "10", "100", "2"]


def test_read_label_pool_reports_bad_entries(tmp_path):
    f = tmp_path / "validation.json"
    f.write_text(json.dumps([{"id": "1", "label": "x", "template": "Holding [something]", "placeholders": ["a"]},
                             {"id": "2", "template": "Holding [something]"}]))
    pool, report = read_label_pool([f])
    assert [e.id for e in pool] == ["1"] and report["label_errors"] == 1
    assert report["errors"][0]["video_id"] == "2" and report["errors"][0]["field"] == "label"
    f.write_text("{}")
    with pytest.raises(DataError, match="validation.json"):
        read_label_pool([f])
