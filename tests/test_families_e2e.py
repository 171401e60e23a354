"""`cuelab demo --quick --set model.family=NAME` end to end for every model family besides the default (whose run
is the session's shared demo --quick run): a tiny model of the family is built, pretrained, fine-tuned,
evaluated on every condition, its attention measured, and the report written. The family's run starts from a
copy of the shared run, so the data, questions and rendered videos (which no family changes) are reused: the
pipeline's fingerprints skip them, and only the model stages and after run again."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cuelab.model.families import DEFAULT, FAMILIES

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if f != DEFAULT))
def test_demo_quick_runs_end_to_end_for_the_family(family, demo_quick_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(demo_quick_run, out)
    # fewer training steps than the quick demo's (a family's machinery, not its learning, is under test here)
    proc = subprocess.run([sys.executable, "-m", "cuelab.cli", "demo", "--quick", "--out", str(out), "--set",
                           f"model.family={family}", "--set", "pretrain.max_steps=4", "--set", "train.max_steps=2"], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo finished" in proc.stdout + proc.stderr
    config = json.loads((out / "models" / "tiny-init" / "config.json").read_text())
    assert config["model_type"] in FAMILIES[family].model_types  # the family's own model was built and trained
    results = json.loads((out / "results.json").read_text())
    seen = {(r["model"], r["condition"]) for r in results["accuracy"] if r["kind"] == "all"}
    for model in ("pretrained", "finetuned"):
        for cond in ("plain", "box", "trajectory", "wrong_object", "blind"):
            assert (model, cond) in seen
    assert results["failed"] == 0  # every question scored
    attention = json.loads((out / "attention" / "attention_results.json").read_text())
    assert {r["model"] for r in attention["rows"]} == {"pretrained", "finetuned"}  # lift written for both
    assert not (out / "attention" / "errors.jsonl").exists()
    assert list((out / "attention" / "overlays").iterdir())
    report = (out / "report" / "report.md").read_text()
    assert f"tiny {family}" in report
