"""cuelab.question: one Question type and one loader. File defects refuse the file whole, naming the file, line,
video and field; content defects refuse it under strict loading (training) and are kept as `problem` (in the
words eval's failed prediction lines use) under lenient loading (eval, attention)."""

from __future__ import annotations

import json

import pytest

from cuelab.errors import DataError
from cuelab.question import Question, load_questions

GOOD = {"id": "100000-object-0", "video": "100000", "kind": "object", "question": "What is moved?",
        "choices": ["red cube", "blue ball"], "answer": "red cube", "answer_index": 0, "target_object": 0,
        "split": "test", "hint": "look at the box", "verb": "pushing", "cue_colors": {"0": "red", "1": "blue"},
        "template": "Pushing [something]"}


def _bad(**changes) -> dict:
    rec = {**GOOD, "id": "bad-q", **changes}
    return {k: v for k, v in rec.items() if v is not _DROP}


_DROP = object()


def _write(tmp_path, second) -> object:
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(second) + "\n")
    return path


def test_a_good_record_loads_typed_and_keeps_its_record_verbatim(tmp_path):
    path = _write(tmp_path, {**GOOD, "id": 7, "video": "100001"})
    a, b = load_questions(path)
    assert (a.id, a.video, a.kind, a.question, a.choices, a.answer_index) == (
        "100000-object-0", "100000", "object", "What is moved?", ("red cube", "blue ball"), 0)
    assert (a.answer, a.hint, a.target_object, a.split, a.verb, a.n_objects, a.problem) == (
        "red cube", "look at the box", "0", "test", "pushing", 2, None)
    assert a.record == GOOD  # verbatim, extra keys included: the prompt builder and prediction lines take it
    assert b.id == 7  # a whole-number id stays a number (prediction lines record it as it is)
    assert load_questions(path, strict=False) == [a, b]


# (second line, field named, words in the message); each refused by both loaders
FILE_DEFECTS = [
    (["not", "an", "object"], None, "must be a JSON object"),
    (_bad(id=_DROP), "id", "lacks a field"),
    (_bad(video=_DROP), "video", "lacks a field"),
    (_bad(video=["100000"]), "video", "must be text or a whole number"),
    (_bad(id="../../x"), "id", "cannot name a file"),
    (_bad(video="a/b"), "video", "cannot name a file"),
    (_bad(id="100000-object-0"), "id", "appears twice"),
]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("second,field,words", FILE_DEFECTS)
def test_file_defects_refuse_the_file_naming_file_line_and_field(tmp_path, second, field, words, strict):
    path = _write(tmp_path, second)
    with pytest.raises(DataError) as e:
        load_questions(path, strict=strict)
    msg = str(e.value)
    assert f"file {path}" in msg and "line 2" in msg and words in msg
    if field is not None:
        assert f"field {field!r}" in msg and e.value.field == field


# (second line, field, what strict loading says, what lenient loading keeps as `problem`: eval's words)
CONTENT_DEFECTS = [
    (_bad(choices=_DROP), "choices", "lacks a field",
     "field 'choices': must be a list of at least 2 non-empty strings"),
    (_bad(choices=["a"]), "choices", "must be a list of at least 2 non-empty strings", None),
    (_bad(choices=["a", ""]), "choices", "must be a list of at least 2 non-empty strings", None),
    (_bad(choices=["a", 3]), "choices", "must be a list of at least 2 non-empty strings", None),
    (_bad(choices="a, b"), "choices", "must be a list of at least 2 non-empty strings", None),
    (_bad(answer_index=_DROP), "answer_index", "lacks a field", "field 'answer_index': not an index into choices"),
    (_bad(answer_index=2), "answer_index", "not an index into choices", None),
    (_bad(answer_index=-1), "answer_index", "not an index into choices", None),
    (_bad(answer_index="0"), "answer_index", "not an index into choices", None),
    (_bad(question=_DROP), "question", "lacks a field", "field 'question': missing"),
    (_bad(question=None), "question", "must be text", "field 'question': missing"),
]


@pytest.mark.parametrize("second,field,strict_words,problem", CONTENT_DEFECTS)
def test_content_defects_refuse_strict_loading_and_are_kept_by_lenient_loading(tmp_path, second, field,
                                                                               strict_words, problem):
    path = _write(tmp_path, second)
    with pytest.raises(DataError) as e:
        load_questions(path)
    msg = str(e.value)
    assert f"file {path}" in msg and "line 2" in msg and "video 100000" in msg and "'bad-q'" in msg
    assert f"field {field!r}" in msg and strict_words in msg
    good, bad = load_questions(path, strict=False)
    assert good.problem is None and bad.record == second
    problem = problem or f"field {field!r}: {strict_words}"
    assert bad.problem == problem and bad.choices == () and bad.answer_index is None


@pytest.mark.parametrize("second", [_bad(answer=_DROP), _bad(answer="green ring")])
def test_training_needs_the_answer_text_among_the_choices(tmp_path, second):
    path = _write(tmp_path, second)
    with pytest.raises(DataError) as e:
        load_questions(path)
    assert "line 2" in str(e.value) and "field 'answer'" in str(e.value)
    assert [q.problem for q in load_questions(path, strict=False)] == [None, None]  # eval scores by answer_index


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="questions file not found") as e:
        load_questions(tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in str(e.value)


def test_a_record_checked_alone_names_its_file():
    with pytest.raises(DataError, match="file q.jsonl"):
        Question.from_record({**GOOD, "choices": []}, "q.jsonl")
    assert Question.from_record({**GOOD, "n_objects": 3}, "q.jsonl").n_objects == 3
