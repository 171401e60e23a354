"""Stage tests: the whole pipeline on tiny settings, a kill and rerun, and `cuelab demo --quick` (twice: the same
results)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cuelab.fsutil import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny-run.yaml"
STAGES = ["data", "questions", "render", "model", "pretrain", "train", "eval", "attention", "report"]


def _cuelab(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cuelab.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _check_run(out: Path, models=("pretrained", "finetuned")) -> dict:
    for s in STAGES:
        assert (out / "stages" / f"{s}.json").exists(), s
    results = json.loads((out / "results.json").read_text())
    rows = {(r["model"], r["condition"]) for r in results["accuracy"] if r["kind"] == "all"}
    for m in models:
        assert {(m, "plain"), (m, "blind")} <= rows
    test = list(read_jsonl(out / "questions" / "test.jsonl"))
    for f in (out / "predictions").glob("*.jsonl"):
        ids = [r["question_id"] for r in read_jsonl(f)]
        assert sorted(ids) == sorted(q["id"] for q in test), f"{f.name}: every question exactly once"
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()
    assert (out / "attention" / "attention_results.json").exists()
    return results


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_stages(tmp_path):
    out = tmp_path / "run"
    proc = _cuelab("run", str(TINY), "--set", f"output_dir={out}", start_new_session=True)
    deadline = time.time() + 300
    while not (out / "stages" / "model.json").exists():  # kill once the pretraining is under way
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the markers of finished stages (not <stage>.started.json: the killed stage's, gone once it finishes)
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")
                if not p.name.endswith(".started.json")}
    assert {"data.json", "questions.json", "render.json", "model.json"} <= set(finished)
    videos = {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")}
    proc = _cuelab("run", str(TINY), "--set", f"output_dir={out}")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    for name, mtime in finished.items():  # nothing finished is redone
        assert (out / "stages" / name).stat().st_mtime_ns == mtime, name
    assert all(p.stat().st_mtime_ns == m for p, m in videos.items())
    assert "stage render: done earlier" in log.replace("\n", " ")
    _check_run(out)


@pytest.mark.slow
def test_demo_quick_end_to_end(demo_quick_run):
    results = _check_run(demo_quick_run)
    conds = {r["condition"] for r in results["accuracy"]}
    assert {"plain", "box", "trajectory", "blind"} <= conds


def _predictions(out: Path) -> dict:
    """Every prediction row of a run by (file, question id), timing fields left out."""
    rows = {}
    for f in sorted((out / "predictions").glob("*.jsonl")):
        for r in read_jsonl(f):
            rows[f.name, r["question_id"]] = {k: v for k, v in r.items() if "second" not in k and "time" not in k}
    return rows


@pytest.mark.slow
def test_a_whole_run_twice_gives_the_same_results(demo_quick_run, tmp_path):
    """The same config in another folder: the same results.json and the same scores for every question."""
    out = tmp_path / "again"
    proc = _cuelab("demo", "--quick", "--out", str(out))
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log
    results = json.loads((demo_quick_run / "results.json").read_text())
    assert json.loads((out / "results.json").read_text()) == results
    first, again = _predictions(demo_quick_run), _predictions(out)
    assert len(first) == results["questions"] > 0 and first == again
