"""The real harness: lmms-eval 0.7 (its own venv, scripts/setup_lmms.sh) runs the exported quick-demo benchmark
with cuelab's model plugin (`--model cuelab`, found through the `lmms_eval.models` entry point) on the CPU, and
every question gets the answer `cuelab eval` gave (the run's prediction files); the generation task gets the text
cuelab's sampler writes. Skipped where the venv is missing (a failure in CI). One lmms-eval run serves every test
here (about 30 s on 2 cores)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.evaluate.predictions import read_predictions
from cuelab.export.harness import cut_at
from cuelab.fsutil import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ["plain", "box", "trajectory", "wrong_object", "blind"]
GEN_TASK = "cuelab_demo_quick_gen_plain"


def lmms_python() -> Path | None:
    """The lmms-eval venv's interpreter: $CUELAB_LMMS_PYTHON or .venv-lmms/bin/python at the repo root."""
    p = os.environ.get("CUELAB_LMMS_PYTHON")
    cand = Path(p) if p else ROOT / ".venv-lmms" / "bin" / "python"
    return cand if cand.is_file() else None


def _samples(res: Path, task: str) -> list[dict]:
    files = sorted(res.rglob(f"*_samples_{task}.jsonl"))
    assert len(files) == 1, f"{task}: {files}"
    return list(read_jsonl(files[0]))


def run_lmms(run: Path, base: Path, tasks: str, model: str = "pretrained") -> dict:
    """Export `run` for lmms-eval under `base`, run lmms-eval on `tasks` with `--model cuelab` on the CPU; its
    results table and samples folder."""
    py = lmms_python()
    if py is None:
        pytest.skip("no lmms-eval venv (.venv-lmms or CUELAB_LMMS_PYTHON): run scripts/setup_lmms.sh")
    out, res = base / "task", base / "results"
    r = CliRunner().invoke(app, ["export", str(run), "--format", "lmms-eval", "--out", str(out)])
    assert r.exit_code == 0, r.output
    env = {**os.environ, "HF_HOME": str(base / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    cmd = [str(py.parent / "lmms-eval"), "eval", "--include_path", str(out), "--tasks", tasks, "--model", "cuelab",
           "--model_args", f"run={run},model={model}", "--device", "cpu", "--log_samples", "--output_path", str(res)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=base)
    log = proc.stdout + proc.stderr
    # lmms-eval exits 0 even when the evaluation raised: its results file is the sign it finished
    results = sorted(res.rglob("*_results.json"))
    assert proc.returncode == 0 and len(results) == 1, log[-6000:]
    return {"results": json.loads(results[0].read_text())["results"], "res": res, "log": log}


def assert_cuelab_answers(got: dict, run: Path, model: str, conditions: list[str]) -> None:
    """Every question of every condition: lmms-eval's answer and losses are `cuelab eval`'s (the run's prediction
    files), and so is the accuracy; the clustered standard error is there."""
    questions = [str(q["id"]) for q in read_jsonl(run / "questions" / "test.jsonl")]
    cuelab = {a["condition"]: a for a in json.loads((run / "results.json").read_text())["accuracy"]
              if a["model"] == model and a["kind"] == "all"}
    for cond in conditions:
        task = f"cuelab_demo_quick_{cond}"
        samples = {s["acc"]["question_id"]: s for s in _samples(got["res"], task)}
        preds = {p["question_id"]: p for p in read_predictions(run / "predictions" / f"{model}__{cond}.jsonl")}
        assert sorted(samples) == sorted(questions), task
        for qid, s in samples.items():
            assert s["acc"]["choice_index"] == preds[qid]["choice_index"], (task, qid)
            assert s["acc"]["video_id"] == str(preds[qid]["video"])
            # (loss, is_greedy) per choice; lmms-eval 0.7.3 logs it as its str() (lmms_task_utils._loss)
            losses = [(ast.literal_eval(r) if isinstance(r, str) else r)[0] for r in s["filtered_resps"]]
            assert [-x for x in losses] == pytest.approx(preds[qid]["scores"], abs=1e-4), (task, qid)
        summary = got["results"][task]
        assert summary["acc,none"] == pytest.approx(cuelab[cond]["accuracy"], abs=1e-6)
        assert isinstance(summary["acc_stderr_clustered,none"], float), summary  # clustered by video_id


@pytest.fixture(scope="module")
def lmms_run(demo_quick_run, tmp_path_factory) -> dict:
    return run_lmms(demo_quick_run, tmp_path_factory.mktemp("lmms"), f"cuelab_demo_quick,{GEN_TASK}")


def test_lmms_eval_gives_cuelab_evals_answers(lmms_run, demo_quick_run):
    assert_cuelab_answers(lmms_run, demo_quick_run, "pretrained", CONDITIONS)


def test_lmms_eval_generation_is_cuelabs_sampler(lmms_run, demo_quick_run, tmp_path):
    from cuelab.config import load_config
    from cuelab.evaluate.run import evaluate

    # cuelab's sampler with the generation task's settings: greedy, 32 new tokens, free text, no penalty
    cfg = load_config(demo_quick_run / "config.yaml", ["eval.rule=sampled", "eval.sampling.temperature=0",
                                                       "eval.sampling.presence_penalty=0",
                                                       "eval.sampling.constrained=false",
                                                       "eval.sampling.max_tokens=32"])
    evaluate(cfg, str(demo_quick_run / "models" / "pretrained"), questions_path=demo_quick_run / "questions" /
             "test.jsonl", videos_root=demo_quick_run / "videos", out_dir=tmp_path, conditions=["plain"],
             blind=False, hint=False, write_results=False, progress=False, device="cpu")
    texts = {p["question_id"]: p["text"] for p in read_predictions(tmp_path / "predictions" /
                                                                   "pretrained__plain.jsonl")}
    samples = _samples(lmms_run["res"], GEN_TASK)
    assert len(samples) == len(texts)
    for s in samples:
        assert s["acc"]["text"] == cut_at(texts[s["acc"]["question_id"]], ["\n"]), s["acc"]


@pytest.mark.extended
def test_lmms_eval_finetuned_adapter(demo_quick_run, tmp_path):
    """The run's fine-tuned model (its LoRA adapter on the pretrained base) through `model=finetuned`."""
    got = run_lmms(demo_quick_run, tmp_path, "cuelab_demo_quick_box,cuelab_demo_quick_blind", model="finetuned")
    assert_cuelab_answers(got, demo_quick_run, "finetuned", ["box", "blind"])


@pytest.mark.extended
@pytest.mark.parametrize("family", ["smolvlm", "internvl"])
def test_lmms_eval_other_families(family, tmp_path):
    """Another model family end to end: its quick demo, exported, scored by lmms-eval through the plugin."""
    import sys

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cuelab.cli", "demo", "--quick", "--out", str(run), "--set",
                           f"model.family={family}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = run_lmms(run, tmp_path / "lmms", "cuelab_demo_quick_plain,cuelab_demo_quick_box")
    assert_cuelab_answers(got, run, "pretrained", ["plain", "box"])
