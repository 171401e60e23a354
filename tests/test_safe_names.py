"""Ids that become parts of file names (videos, questions, models, conditions, previews, overlays, attention rows)
are checked by one function, and refused where they are read: nothing is ever written outside the output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cuelab.errors import DataError
from cuelab.fsutil import safe_name

GOOD = ["ok-1_2", "123456", "vid-object-0", "x" * 160, "a b", "q[1]", "plain+hint", "ünïcode"]
BAD = ["../x", "/abs", "a/b", "a\\b", "..", ".", "", ".hidden", "a__b", "x" * 300, "a\x00b", "a\nb",
       "/../../../x/pwn"]


@pytest.mark.parametrize("name", GOOD)
def test_safe_name_keeps_plain_names_as_they_are(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_safe_name_refuses_names_that_are_not_one_plain_file_name(name):
    with pytest.raises(DataError) as e:
        safe_name(name, what="question id", file="q.jsonl", field="id")
    assert repr(name)[:40] in str(e.value) and "file q.jsonl" in str(e.value) and "field 'id'" in str(e.value)


# --- question files: refused whole at load, naming the file, the question and the field ------------------------

def _loaders():
    from cuelab.attention.run import read_questions
    from cuelab.model.data import load_questions as train_load
    from cuelab.question import load_questions

    def eval_load(path):  # what evaluate reads: the lenient loader (a bad choice list fails one question)
        return [q.record for q in load_questions(path, strict=False)]

    return {"attention": read_questions, "eval": eval_load, "train": train_load}


def _question(qid="100000-object-0", video="100000") -> dict:
    return {"id": qid, "video": video, "kind": "object", "question": "What is moved?",
            "choices": ["red cube", "blue ball"], "answer": "red cube", "answer_index": 0, "target_object": "0",
            "split": "test"}


@pytest.mark.parametrize("loader", ["attention", "eval", "train"])
@pytest.mark.parametrize("field,value", [("id", "/../../../x/pwn"), ("id", "a__b"), ("id", ".hidden"),
                                         ("video", "../../x"), ("video", "a/b"), ("video", "")])
def test_question_files_with_a_path_like_id_or_video_are_refused_at_load(tmp_path, loader, field, value):
    path = tmp_path / "questions.jsonl"
    bad = {**_question(qid="bad-q"), field: value}
    path.write_text("".join(json.dumps(q) + "\n" for q in (_question(), bad)))
    with pytest.raises(DataError) as e:
        _loaders()[loader](path)
    msg = str(e.value)
    assert f"file {path}" in msg and f"field {field!r}" in msg and "line 2" in msg
    assert repr(value) in msg and (field == "id" or "'bad-q'" in msg)


@pytest.mark.parametrize("loader", ["attention", "eval", "train"])
def test_question_files_with_plain_ids_load(tmp_path, loader):
    path = tmp_path / "questions.jsonl"
    qs = [_question(), _question("q[1]"), _question("123456", "vid-7")]
    path.write_text("".join(json.dumps(q) + "\n" for q in qs))
    assert [q["id"] for q in _loaders()[loader](path)] == ["100000-object-0", "q[1]", "123456"]


@pytest.mark.parametrize("model,condition", [("../m", "plain"), ("pretrained", "../../evil"), ("a__b", "plain"),
                                             ("pretrained", ".hidden"), ("pretrained", "")])
def test_prediction_files_refuse_unsafe_model_and_condition_names(tmp_path, model, condition):
    from cuelab.evaluate.predictions import predictions_path

    with pytest.raises(DataError, match="cannot name a file"):
        predictions_path(tmp_path, model, condition)
    assert predictions_path(tmp_path, "finetuned", "box+hint").name == "finetuned__box+hint.jsonl"


def test_overlay_rows_are_paired_by_name_not_by_glob(tmp_path):
    """A '[' in a question id is a glob character: the rows of q[1] must pair with q[1]'s, never with q1's."""
    from cuelab.attention.plots import rows_by_question

    names = ["m__plain__q[1]", "m__box__q[1]", "m__plain__q1", "m__box__q1", "m__plain__q*", "other__x"]
    for n in names:
        (tmp_path / f"{n}.npz").write_bytes(b"")
    pairs = rows_by_question(tmp_path)
    assert {k: sorted(v) for k, v in pairs.items()} == {("m", "q[1]"): ["box", "plain"], ("m", "q1"): ["box", "plain"],
                                                        ("m", "q*"): ["plain"]}
    assert pairs[("m", "q[1]")]["box"].name == "m__box__q[1].npz"


# --- end to end: the attention stage, a preview, the report ----------------------------------------------------

def _files(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and skip not in p.parents}


@pytest.fixture(scope="module")
def attn(tmp_path_factory) -> Path:
    """Two short synthetic videos under plain and box (box = the same frames) and the tiny model."""
    from cuelab.config import SyntheticConfig
    from cuelab.data.synthetic import generate
    from cuelab.model.tiny import build_tiny_model, small_test_config
    from cuelab.video.io import find_video, read_video, write_video

    root = tmp_path_factory.mktemp("names")
    generate(SyntheticConfig(videos=2, seed=1, min_seconds=1, max_seconds=1.5), root / "data")
    for vid in ("100000", "100001"):
        v = read_video(find_video(root / "data" / "videos", vid))
        for cond in ("plain", "box"):
            write_video(root / "videos" / cond / f"{vid}.mp4", v.frames, v.fps)
    build_tiny_model(root / "tiny", small_test_config())
    return root


def _write_questions(path: Path, questions: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path


def _attention(attn: Path, qpath: Path, out: Path, *overrides: str):
    from cuelab.attention.run import ModelSpec, run_attention
    from cuelab.config import load_config

    cfg = load_config(None, ["attention.conditions=[plain,box]", "attention.n=2", "attention.overlays=2",
                             *overrides])
    return run_attention(cfg, [ModelSpec("pretrained", str(attn / "tiny"))], qpath, attn / "videos",
                         attn / "data" / "annotations.json", out, device="cpu")


def test_attention_with_a_path_like_question_id_writes_nothing_outside_out(attn, tmp_path):
    out = tmp_path / "run" / "out"
    qid = "/../../../x/pwn"
    qpath = _write_questions(tmp_path / "questions.jsonl",
                             [_question(qid, "100000"), _question("100001-object-0", "100001")])
    before = _files(tmp_path, out)
    try:
        _attention(attn, qpath, out)
        err = None
    except DataError as e:
        err = e
    assert _files(tmp_path, out) - before == set()  # the old code wrote run/x/pwn.npz here
    assert err is not None and repr(qid) in str(err) and "field 'id'" in str(err)
    assert f"file {qpath}" in str(err)
    assert not out.exists()  # refused before any work


def test_attention_refuses_an_unsafe_condition_before_any_work(attn, tmp_path):
    out = tmp_path / "out"
    # refused by the config (not a registered cue) before attention's own check (not a safe name) is reached
    with pytest.raises(DataError, match=r"unknown cue '\.\./\.\./evil'|condition '\.\./\.\./evil'.*cannot name a file"):
        _attention(attn, _write_questions(tmp_path / "q.jsonl", [_question()]), out,
                   "attention.conditions=[plain,../../evil]")
    assert not out.exists()


def test_attention_overlays_of_an_id_with_glob_characters(attn, tmp_path):
    out = tmp_path / "out"
    qpath = _write_questions(tmp_path / "q.jsonl", [_question("q[1]", "100000"), _question("q2", "100001")])
    results = _attention(attn, qpath, out)
    assert results["settings"]["question_ids"] == ["q2", "q[1]"]
    rows = sorted(p.name for p in (out / "rows").iterdir())
    assert rows == ["pretrained__box__q2.npz", "pretrained__box__q[1].npz", "pretrained__plain__q2.npz",
                    "pretrained__plain__q[1].npz"]
    gifs = sorted(p.name for p in (out / "overlays").glob("*.gif"))
    assert gifs == ["pretrained__q2__box.gif", "pretrained__q[1]__box.gif"]  # the old glob looked for q1's rows


def test_preview_with_a_path_like_video_id_writes_nothing_outside_out(attn, tmp_path):
    from typer.testing import CliRunner

    from cuelab.cli import app

    out = tmp_path / "run" / "out"
    before = _files(tmp_path, out)
    res = CliRunner().invoke(app, ["preview", "--videos", str(attn / "videos" / "plain"), "--annotations",
                                   str(attn / "data" / "annotations.json"), "--video-id", "../../x/pwn",
                                   "--cues", "plain,box", "--out", str(out)], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "'../../x/pwn'" in res.output and "path separator" in res.output
    assert _files(tmp_path, out) - before == set() and not out.exists()


def test_report_keeps_an_id_shaped_like_an_image_link_as_text(tmp_path):
    """A video id in test.jsonl is refused for a preview; the refusal is shown as text, never as a Markdown
    image that report.html would embed (here: a file outside the run folder)."""
    from PIL import Image

    from cuelab.config import load_config
    from cuelab.fsutil import write_jsonl
    from cuelab.run_layout import RunPaths
    from cuelab.report.build import build_report

    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "secret.png")
    paths = RunPaths(tmp_path / "run")
    paths.videos.mkdir(parents=True)
    write_jsonl(paths.questions / "test.jsonl", [{"id": "q", "video": "![x](../../secret.png)"}])
    cfg = load_config(None, [f"output_dir={paths.root}", "model.tiny={}"])
    md, html = build_report(cfg, paths)
    assert "(preview of video `![x](../../secret.png)` failed:" in md.read_text()
    assert "<img" not in html.read_text()
