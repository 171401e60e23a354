"""The report: markdown + a self-contained HTML page, looked at in a real (headless) browser."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from cuelab.config import load_config
from cuelab.fsutil import write_jsonl
from cuelab.pipeline import RunPaths
from cuelab.report.build import build_report, condition_order


def _fake_run(tmp_path):
    """A run folder holding predictions of two models (real prediction-file format) and their questions."""
    from cuelab.evaluate.metrics import write_results

    paths = RunPaths(tmp_path)
    rng = np.random.default_rng(0)
    questions = [{"id": f"v{i // 3}-{k}-0", "video": f"v{i // 3}", "kind": k, "verb": ["pushing", "lifting"][i % 2]}
                 for i, k in zip(range(60), ["object", "verb", "referential"] * 20)]
    write_jsonl(paths.questions / "test.jsonl", questions)
    for model, p_plain in (("pretrained", 0.5), ("finetuned", 0.8)):
        for cond, shift in (("plain", 0.0), ("trajectory", -0.1), ("blind", -0.3)):
            rows = []
            for q in questions:
                ok = bool(rng.random() < p_plain + shift)
                rows.append({"question_id": q["id"], "model": model, "condition": cond, "choice_index": 0,
                             "scores": [0.0] * 4, "correct": ok, "kind": q["kind"], "video": q["video"]})
            write_jsonl(paths.predictions / f"{model}__{cond}.jsonl", rows)
    write_results(paths.predictions, paths.root)
    return paths


def test_report_tables_hold_the_results(tmp_path):
    paths = _fake_run(tmp_path)
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.tiny={}"])
    md, html = build_report(cfg, paths)
    text = md.read_text()
    assert "**Pretrained**" in text and "**Finetuned**" in text and "McNemar" in text
    assert "| plain |" in text and "| trajectory |" in text and "| blind |" in text
    assert "Accuracy per verb" in text and "| pushing |" in text
    page = html.read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    assert 'src="figures/' not in page  # every image embedded: the page stands alone


def test_condition_order():
    assert condition_order({"blind", "box", "plain", "wrong_object", "trajectory"}) == \
        ["plain", "box", "trajectory", "wrong_object", "blind"]


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    paths = _fake_run(tmp_path)
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.tiny={}"])
    _, html = build_report(cfg, paths)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={shot}", html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (1600, 1200)
    # a rendered page: mostly white, with dark text and the coloured bars of the chart
    assert (img.sum(-1) > 700).mean() > 0.5 and (img.sum(-1) < 200).mean() > 0.005
    colourful = (img.max(-1) - img.min(-1)) > 80
    assert colourful.mean() > 0.002


def test_report_command_merges_shards_and_writes_the_report(tmp_path):
    from typer.testing import CliRunner

    from cuelab.cli import app
    from cuelab.config import save_config

    paths = _fake_run(tmp_path)
    # split one prediction file into two shard files: `cuelab report` merges them
    f = paths.predictions / "finetuned__plain.jsonl"
    lines = f.read_text().splitlines(keepends=True)
    (paths.predictions / "finetuned__plain.shard0of2.jsonl").write_text("".join(lines[:30]))
    (paths.predictions / "finetuned__plain.shard1of2.jsonl").write_text("".join(lines[30:]))
    before = (paths.root / "results.json").read_text()
    f.unlink()
    (paths.root / "results.json").unlink()
    save_config(load_config(None, [f"output_dir={tmp_path}", "model.tiny={}"]), tmp_path / "config.yaml")
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (paths.root / "results.json").read_text() == before
    assert (paths.report / "report.html").exists()
