"""`cuelab export` on the quick demo's run: the Hugging Face folder loads with `datasets` (one config per condition,
as many rows as test questions, every video there), the lmms-eval task folder is laid out as lmms-eval 0.7 reads
it, its utils.py scores as cuelab does, the VLMEvalKit TSVs and class work against a stand-in of VLMEvalKit's
base class (VLMEvalKit itself is not on PyPI), the harness scorer gives `cuelab eval`'s answers, and bad input
ends in one line naming the file or field. The real lmms-eval run is tests/test_export_lmms.py."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.errors import DataError
from cuelab.evaluate.predictions import read_predictions
from cuelab.export import lmms_task_utils as task_utils
from cuelab.fsutil import read_jsonl

CONDITIONS = ["plain", "box", "trajectory", "wrong_object", "blind"]


def _export(run: Path, fmt: str, out: Path, *more: str) -> dict:
    r = CliRunner().invoke(app, ["export", str(run), "--format", fmt, "--out", str(out), *more])
    assert r.exit_code == 0, r.output
    return json.loads((out / "cuelab_export.json").read_text())


@pytest.fixture(scope="module")
def exports(demo_quick_run, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("exports")
    for fmt in ("hf", "lmms-eval", "vlmevalkit"):
        _export(demo_quick_run, fmt, base / fmt)
    return {fmt: base / fmt for fmt in ("hf", "lmms-eval", "vlmevalkit")}


@pytest.fixture(scope="module")
def test_questions(demo_quick_run) -> list[dict]:
    return list(read_jsonl(demo_quick_run / "questions" / "test.jsonl"))


def _prompt(run: Path, rec: dict) -> str:
    from cuelab.config import load_config
    from cuelab.model.prompt import prompt_spec, question_text

    return question_text(rec, prompt_spec(load_config(run / "config.yaml")))


# --- Hugging Face datasets --------------------------------------------------------------------------------------

def test_hf_export_loads_one_config_per_condition(exports, test_questions, demo_quick_run, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the datasets cache, away from the user's
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    out = exports["hf"]
    card = (out / "README.md").read_text()
    for heading in ("## Fields", "## Sources and licences", "## How the cues were drawn", "license: other"):
        assert heading in card
    for cond in CONDITIONS:
        ds = datasets.load_dataset(str(out), cond)["test"]
        assert len(ds) == len(test_questions), cond
        assert ds["question_id"] == [str(q["id"]) for q in test_questions]  # same order in every condition
        assert ds["condition"] == [cond] * len(ds)
        assert f"`{cond}`" in card
        for row in ds:
            if cond == "blind":
                assert row["video"] is None
            else:
                assert (out / row["video"]).is_file(), row
                assert row["video"] == f"videos/{cond}/{row['video_id']}.mp4"
            assert row["choices"][row["answer_index"]] == row["answer"]
    rec = test_questions[0]
    first = datasets.load_dataset(str(out), "box")["test"][0]
    assert first["prompt"] == _prompt(demo_quick_run, rec)  # the text cuelab's prompt builder writes
    # the videos are the run's rendered files, byte for byte
    source = demo_quick_run / "videos" / "box" / f"{rec['video']}.mp4"
    assert (out / first["video"]).read_bytes() == source.read_bytes()


# --- lmms-eval task folder --------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """YAML as lmms-eval reads it: `!function utils.NAME` kept as its name."""


_Loader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))


def test_lmms_eval_folder_layout(exports, test_questions):
    out = exports["lmms-eval"]
    template = yaml.load((out / "_default_template_yaml").read_text(), Loader=_Loader)
    assert template["output_type"] == "multiple_choice" and template["cluster_key"] == "video_id"
    assert template["target_delimiter"] == ""  # the continuation is the choice string itself
    assert template["process_results"] == ("function", "utils.process_results")
    gen = yaml.load((out / "_gen_template_yaml").read_text(), Loader=_Loader)
    assert gen["output_type"] == "generate_until"
    assert (out / "utils.py").read_text() == Path(task_utils.__file__).read_text()
    spec = importlib.util.spec_from_file_location("exported_utils", out / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    for cond in CONDITIONS:
        for stem, tag, base in ((f"cuelab_demo_quick_{cond}", "cuelab_demo_quick", "_default_template_yaml"),
                                (f"cuelab_demo_quick_gen_{cond}", "cuelab_demo_quick_gen", "_gen_template_yaml")):
            task = yaml.load((out / f"{stem}.yaml").read_text(), Loader=_Loader)
            assert task["include"] == base and task["task"] == stem and task["tag"] == tag
            data = Path(task["dataset_kwargs"]["data_files"]["test"])
            assert data.is_absolute() and data == out / "data" / f"{cond}.jsonl"
        docs = list(read_jsonl(out / "data" / f"{cond}.jsonl"))
        assert [d["question_id"] for d in docs] == [str(q["id"]) for q in test_questions]
        for d in docs:
            assert utils.doc_to_text(d) == d["prompt"]
            assert utils.doc_to_choice(d)[utils.doc_to_target(d)] == d["answer"]
            visuals = utils.doc_to_visual(d)  # absolute, from the folder utils.py sits in
            assert (visuals == []) if cond == "blind" else (len(visuals) == 1 and Path(visuals[0]).is_file())


def test_task_utils_score_like_cuelab():
    doc = {"question_id": "q1", "video_id": "7", "condition": "box", "kind": "object", "answer_index": 2,
           "choices": ["red cube", "blue ball", "green ring", "pink star"], "prompt": "P"}
    # losses (lower = likelier), as tuples and as the str() lmms-eval 0.7.3 hands over
    res = task_utils.process_results(doc, [(3.0, False), "(2.5, False)", (0.5, True), "(0.5, False)"])["acc"]
    assert res == {"score": 1.0, "video_id": "7", "question_id": "q1", "condition": "box", "kind": "object",
                   "choice_index": 2}  # the tie at 0.5 goes to the earlier choice, as cuelab's pick
    assert task_utils.process_results(doc, [(0.1, True), (2.0, False), (3.0, False), (4.0, False)])["acc"][
        "score"] == 0.0
    assert task_utils.match_choice(" green ring\n", doc["choices"]) == 2
    assert task_utils.match_choice("Green ring.", doc["choices"]) == 2
    assert task_utils.match_choice("a green ring", doc["choices"]) == -1
    gen = task_utils.process_generation(doc, ["Blue ball"])["acc"]
    assert gen["choice_index"] == 1 and gen["score"] == 0.0 and gen["text"] == "Blue ball"
    assert task_utils.aggregate_accuracy([{"score": 1.0}, {"score": 0.0}, 1]) == pytest.approx(2 / 3)
    assert task_utils.doc_to_text(doc, {"pre_prompt": "A ", "post_prompt": " B"}) == "A P B"


# --- VLMEvalKit -------------------------------------------------------------------------------------------------

VIDEO_BASE = '''
from vlmeval.smp import load


class VideoBaseDataset:
    """The part of VLMEvalKit's VideoBaseDataset.__init__ a dataset class relies on (vlmeval/dataset/video_base.py):
    prepare_dataset gives the video root and the TSV, which is loaded as `data`."""

    MODALITY = "VIDEO"

    def __init__(self, dataset="MMBench-Video", pack=False, nframe=0, fps=-1):
        self.dataset_name = dataset
        ret = self.prepare_dataset(dataset)
        self.data_root, self.data_file = ret["root"], ret["data_file"]
        self.data = load(self.data_file)
        assert "question" in self.data and "video" in self.data
        self.nframe, self.fps = nframe, fps

    def __len__(self):
        return len(self.data)
'''

SMP = '''
import json
import pandas as pd


def load(path):
    return pd.read_csv(path, sep="\\t") if path.endswith(".tsv") else json.load(open(path))


def dump(obj, path):
    if isinstance(obj, pd.DataFrame):
        obj.to_csv(path, sep="\\t", index=False)
    else:
        json.dump(obj, open(path, "w"))
'''


@pytest.fixture
def vlmeval_stand_in(tmp_path, monkeypatch):
    pkg = tmp_path / "stand_in" / "vlmeval"
    (pkg / "dataset").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "smp.py").write_text(SMP)
    (pkg / "dataset" / "__init__.py").write_text("")
    (pkg / "dataset" / "video_base.py").write_text(VIDEO_BASE)
    monkeypatch.syspath_prepend(str(pkg.parent))
    yield
    for name in [m for m in sys.modules if m == "vlmeval" or m.startswith("vlmeval.") or m == "cuelab_demo_quick"]:
        del sys.modules[name]


def test_vlmevalkit_tsv_and_class(exports, test_questions, vlmeval_stand_in, monkeypatch, tmp_path):
    import pandas as pd

    out = exports["vlmevalkit"]
    monkeypatch.syspath_prepend(str(out))
    mod = importlib.import_module("cuelab_demo_quick")
    assert mod.ROOT == str(out) and set(mod.DATASETS) == {f"cuelab_demo_quick_{c}" for c in CONDITIONS}
    box = mod.CuelabVideoMCQ("cuelab_demo_quick_box")
    assert box.TYPE == "Video-MCQ" and len(box) == len(test_questions)
    assert list(box.data["question_id"]) == [str(q["id"]) for q in test_questions]
    for k in range(len(box)):
        video, text = box.build_prompt(k, video_llm=True)
        assert video["type"] == "video" and Path(video["value"]).is_file()
        assert text == {"type": "text", "value": box.data.iloc[k]["prompt"]}
    blind = mod.CuelabVideoMCQ("cuelab_demo_quick_blind")
    assert [m["type"] for m in blind.build_prompt(0, video_llm=True)] == ["text"]
    # VLMEvalKit's inference adds a `prediction` column; evaluate scores it
    preds = box.data.copy()
    right = [json.loads(c)[a] for c, a in zip(preds["candidates"], preds["answer_index"])]
    preds["prediction"] = [r if k % 2 == 0 else "no such choice" for k, r in enumerate(right)]
    eval_file = tmp_path / "model_cuelab_demo_quick_box.tsv"
    preds.to_csv(eval_file, sep="\t", index=False)
    rating = box.evaluate(str(eval_file))
    assert rating["overall"] == pytest.approx(sum(1 for k in range(len(preds)) if k % 2 == 0) / len(preds))
    scored = pd.read_csv(str(eval_file).replace(".tsv", "_score.tsv"), sep="\t")
    assert list(scored["score"]) == [1 - k % 2 for k in range(len(preds))]


# --- the harness scorer (what `--model cuelab` runs), without lmms-eval ------------------------------------------

@pytest.fixture(scope="module")
def harness(demo_quick_run):
    from cuelab.export.harness import HarnessScorer, model_settings

    h = HarnessScorer(model_settings(run=str(demo_quick_run), model="pretrained"), device="cpu", progress=False)
    yield h
    h.close()


def _requests(out: Path, cond: str, docs=None, context=None):
    from cuelab.export.harness import Request

    docs = docs if docs is not None else list(read_jsonl(out / "data" / f"{cond}.jsonl"))
    return docs, [Request(d, context if context is not None else d["prompt"],
                          [str(out / d["video"])] if d["video"] else [], group=cond, continuation=c)
                  for d in docs for c in d["choices"]]


@pytest.mark.parametrize("cond", ["box", "blind"])
def test_harness_answers_as_cuelab_eval(harness, exports, demo_quick_run, cond):
    docs, reqs = _requests(exports["lmms-eval"], cond)
    res = harness.loglikelihood(reqs)
    preds = {p["question_id"]: p
             for p in read_predictions(demo_quick_run / "predictions" / f"pretrained__{cond}.jsonl")}
    k = 0
    for d in docs:
        losses = [r[0] for r in res[k:k + 4]]
        k += 4
        p = preds[d["question_id"]]
        assert task_utils.process_results(d, res[k - 4:k])["acc"]["choice_index"] == p["choice_index"], d
        assert [-x for x in losses] == pytest.approx(p["scores"], abs=1e-4)


def test_harness_greedy_decoding_leaves_the_scores(demo_quick_run, exports, harness):
    from cuelab.export.harness import HarnessScorer

    greedy = HarnessScorer(harness.settings, device="cpu", greedy=True, progress=False)
    docs, reqs = _requests(exports["lmms-eval"], "plain")
    docs, reqs = docs[:6], reqs[:24]
    a, b = harness.loglikelihood(reqs), greedy.loglikelihood(reqs)
    assert [x[0] for x in a] == pytest.approx([x[0] for x in b], abs=1e-5)
    for k in range(0, 24, 4):
        assert sum(x[1] for x in b[k:k + 4]) <= 1  # one choice at most is what greedy decoding gives
    greedy.close()


def test_harness_refuses_what_it_would_score_wrongly(harness, exports, demo_quick_run):
    from cuelab.export.harness import HarnessScorer, model_settings

    docs = list(read_jsonl(exports["lmms-eval"] / "data" / "plain.jsonl"))[:1]
    with pytest.raises(DataError, match="doc_to_text"):  # a pre-prompt: not the text cuelab builds
        harness.loglikelihood(_requests(exports["lmms-eval"], "plain", docs, "Q: " + docs[0]["prompt"])[1])
    foreign = [{k: v for k, v in docs[0].items() if k != "question_id"}]
    with pytest.raises(DataError, match="cuelab export"):
        harness.loglikelihood(_requests(exports["lmms-eval"], "plain", foreign)[1])
    _, reqs = _requests(exports["lmms-eval"], "plain", docs)
    reqs[0].continuation = " " + reqs[0].continuation  # lmms-eval's default target_delimiter
    with pytest.raises(DataError, match="target_delimiter"):
        harness.loglikelihood(reqs)
    with pytest.raises(DataError, match="lowest loss"):
        HarnessScorer(harness.settings, rule="greedy")
    with pytest.raises(DataError, match="not both"):
        model_settings(run=str(demo_quick_run), pretrained="x")
    with pytest.raises(DataError, match="'pretrained' and 'finetuned'"):
        model_settings(run=str(demo_quick_run), model="base")


# --- the command ------------------------------------------------------------------------------------------------

def _fails(args: list, *names: str) -> None:
    r = CliRunner().invoke(app, ["export", *[str(a) for a in args]])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in names:
        assert n in lines[0], lines[0]


def test_export_refuses_bad_input(demo_quick_run, tmp_path):
    _fails([tmp_path, "--format", "hf", "--out", tmp_path / "o"], str(tmp_path / "config.yaml"), "not a cuelab run")
    _fails([demo_quick_run, "--format", "csv", "--out", tmp_path / "o"], "--format", "csv")
    _fails([demo_quick_run, "--format", "hf", "--out", tmp_path / "o", "--conditions", "plain,spotlight"],
           "--conditions", "spotlight")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _fails([demo_quick_run, "--format", "hf", "--out", tmp_path / "mine"], str(tmp_path / "mine"),
           "cuelab_export.json")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "o").exists()


def test_export_missing_video_names_it(demo_quick_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    (run / "videos").mkdir(parents=True)
    for part in ("config.yaml", "questions"):
        (shutil.copytree if (demo_quick_run / part).is_dir() else shutil.copy)(demo_quick_run / part, run / part)
    shutil.copytree(demo_quick_run / "videos" / "box", run / "videos" / "box")
    vid = next(read_jsonl(run / "questions" / "test.jsonl"))["video"]
    (run / "videos" / "box" / f"{vid}.mp4").unlink()
    _fails([run, "--format", "lmms-eval", "--out", tmp_path / "o", "--conditions", "box"], f"video {vid}",
           "render it again")


def test_export_again_replaces_and_keeps_order(demo_quick_run, tmp_path, test_questions):
    out = tmp_path / "again"
    _export(demo_quick_run, "lmms-eval", out, "--conditions", "box,blind", "--name", "Cues v1")
    first = sorted(p.name for p in out.iterdir())
    assert "cuelab_cues_v1_box.yaml" in first and "cuelab_cues_v1_plain.yaml" not in first
    summary = _export(demo_quick_run, "lmms-eval", out, "--conditions", "plain")
    assert summary["conditions"] == ["plain"] and summary["rows"] == {"plain": len(test_questions)}
    assert not (out / "data" / "box.jsonl").exists()  # replaced whole, nothing stale left
