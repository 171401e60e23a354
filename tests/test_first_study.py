"""The first study's published question files become cuelab questions, kept as they were, faults flagged."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.data.first_study import convert_first_study
from cuelab.data.questions import RECORD_KEYS
from cuelab.errors import DataError


def _record(video, qtype, question, choices, answer, gpt=None):
    return {"video": f"videos/{video}.webm",
            "conversations": [{"from": "human", "value": f"<video>\n{question}\n" + "\n".join(choices)},
                              {"from": "gpt", "value": gpt if gpt is not None else answer}],
            "metadata": {"question": question, "choices": choices, "answer": answer, "type": qtype,
                         "video": f"videos/{video}.webm"}}


RECORDS = [
    _record("44745", "verb", "_____ pill boxes into pill bag", ["dropping", "stuffing", "pushing", "pulling"],
            "stuffing"),
    _record("44745", "object", "Stuffing _____ into pill bag", ["pill boxes", "the speaker", "speaker", "cup"],
            "pill boxes"),
    _record("44745", "object", "Stuffing pill boxes into _____", ["pill bag", "cup", "pill bag", "pen"], "pill bag"),
    _record("20", "noun", "Putting _____ next to cup", ["cup", "pen", "key", "box"], "cup"),
    _record("21", "verb", "_____ pen", ["holding", "squeezing", "throwing", "tearing"], "C"),
    _record("22", "verb", "_____ pen", ["holding", "squeezing", "throwing", "tearing"], "running"),  # not a choice
    {"video": "23", "conversations": []},  # no metadata
]


@pytest.fixture
def first_study_file(tmp_path):
    path = tmp_path / "qwen_format_test.json"
    path.write_text(json.dumps(RECORDS))
    return path


def test_records_are_kept_as_they_were_and_faults_flagged(first_study_file):
    rows, manifest = convert_first_study(first_study_file)
    assert [r["id"] for r in rows] == ["44745-verb-0", "44745-object-0", "44745-object-1", "20-object-0", "21-verb-0"]
    for r, raw in zip(rows, RECORDS):
        assert tuple(r) == RECORD_KEYS and r["split"] == "test"
        assert r["question"] == raw["metadata"]["question"] and r["choices"] == raw["metadata"]["choices"]
        assert r["choices"][r["answer_index"]] == r["answer"]
    assert rows[0]["flags"] == [] and rows[0]["answer_index"] == 1 and rows[0]["kind"] == "verb"
    assert rows[1]["flags"] == ["duplicate_choices"]  # "the speaker" and "speaker"
    assert rows[2]["flags"] == ["duplicate_choices", "answer_repeated"]
    assert rows[3]["flags"] == ["answer_in_question"] and rows[3]["kind"] == "object"
    assert rows[4]["answer"] == "throwing" and rows[4]["answer_index"] == 2  # answer given as a letter
    assert manifest["dropped"]["records"] == 2
    assert {e["field"] for e in manifest["dropped"]["errors"]} == {"answer", "metadata"}
    assert manifest["flags"] == {"answer_in_question": 1, "answer_repeated": 1, "duplicate_choices": 2}
    assert manifest["sanity"]["duplicate_choices"] == 2


def test_cli_converts_into_a_test_split(first_study_file, tmp_path):
    out = tmp_path / "q"
    res = CliRunner().invoke(app, ["questions", "--from-first-study", str(first_study_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "train.jsonl").read_text() == ""
    rows = [json.loads(x) for x in (out / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and json.loads((out / "manifest.json").read_text())["questions"]["test"] == 5


def test_a_file_that_is_not_a_list_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"video": "1"}')
    with pytest.raises(DataError, match="bad.json"):
        convert_first_study(path)
