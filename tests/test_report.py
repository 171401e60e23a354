"""The report: markdown + a self-contained HTML page, looked at in a real (headless) browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from cuelab.config import load_config
from cuelab.fsutil import write_jsonl
from cuelab.run_layout import RunPaths
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


def _md_tables(md: str) -> dict[str, list[dict]]:
    """Every markdown table of the report under the line (bold model name or heading) it follows."""
    tables, title, header = {}, None, None
    for line in md.splitlines():
        if line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                tables[title] = []
            elif not set(line) <= set("|-"):
                tables[title].append(dict(zip(header, cells)))
        else:
            header = None
            if line.startswith(("**", "#")):
                title = line.strip().strip("*#").strip()
    return tables


def _pct(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d", text)]


def _close(shown: float, value: float) -> bool:
    """A percentage shown with one decimal is the value to within half of that decimal."""
    return abs(shown - 100 * value) <= 0.05 + 1e-9


def _assert_report_matches_results(md: str, results: dict) -> None:
    """Each accuracy, interval, count and paired comparison in report.md is results.json's, to the digit shown."""
    tables = _md_tables(md)
    cells = 0
    for r in results["accuracy"]:
        row = next(x for x in tables[r["model"].capitalize()] if x["condition"] == r["condition"])
        acc, lo, hi = _pct(row[f"{r['kind']} % [95% CI]"])
        assert _close(acc, r["accuracy"]) and _close(lo, r["ci_low"]) and _close(hi, r["ci_high"]), (r, row)
        if r["kind"] == "all":
            assert (int(row["n"]), int(row["failed"])) == (r["n"], r["failed"]), (r, row)
        cells += 1
    shown = sum(len([k for k in row if k.endswith("% [95% CI]") and row[k]])
                for m in {r["model"] for r in results["accuracy"]} for row in tables[m.capitalize()])
    assert cells == shown > 0  # nothing in the tables that results.json does not hold
    paired = {(x["A"], x["B"]): x for x in tables["Paired comparisons (same questions)"]}
    comps = [c for c in results["comparisons"] if c["kind"] == "all"]
    assert len(paired) == len(comps) > 0
    for c in comps:
        row = paired[f"{c['model']} {c['condition']}", f"{c['vs_model']} {c['vs_condition']}"]
        assert _close(_pct(row["A - B (points)"])[0], c["diff"]), (c, row)
        if c["ci_low"] is not None:
            lo, hi = _pct(row["95% CI (clustered by video)"])
            assert _close(lo, c["ci_low"]) and _close(hi, c["ci_high"]), (c, row)
        assert (int(row["n"]), int(row["only A right"]), int(row["only B right"])) == \
            (c["n"], c["only_a"], c["only_b"]), (c, row)
        assert abs(float(row["McNemar p (exact)"]) - c["mcnemar_p"]) <= 5e-3 * max(c["mcnemar_p"], 1e-3), (c, row)


def test_report_numbers_are_the_results(tmp_path):
    """Two models whose conditions all differ: a number in the wrong row or column is caught."""
    paths = _fake_run(tmp_path)
    md, _ = build_report(load_config(None, [f"output_dir={tmp_path}", "model.tiny={}"]), paths)
    _assert_report_matches_results(md.read_text(), json.loads((paths.root / "results.json").read_text()))


@pytest.mark.slow
def test_demo_report_numbers_are_its_results(demo_quick_run):
    """The report that `cuelab demo --quick` wrote holds the numbers of that run's results.json."""
    _assert_report_matches_results((demo_quick_run / "report" / "report.md").read_text(),
                                   json.loads((demo_quick_run / "results.json").read_text()))


def test_condition_order():
    assert condition_order({"blind", "box", "plain", "wrong_object", "trajectory"}) == \
        ["plain", "box", "trajectory", "wrong_object", "blind"]


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    paths = _fake_run(tmp_path)
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.tiny={}"])
    _, html = build_report(cfg, paths)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,3200",
                    f"--screenshot={shot}", html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (3200, 1200)  # tall enough for the verdict and results above the chart
    # a rendered page: mostly white, with dark text and the coloured bars of the chart
    assert (img.sum(-1) > 700).mean() > 0.5 and (img.sum(-1) < 200).mean() > 0.005
    colourful = (img.max(-1) - img.min(-1)) > 80
    assert colourful.mean() > 0.002


def test_report_command_merges_shards_and_writes_the_report(tmp_path):
    from typer.testing import CliRunner

    from cuelab.cli import app
    from cuelab.config import save_config

    from cuelab.evaluate.metrics import write_results

    paths = _fake_run(tmp_path)
    save_config(load_config(None, [f"output_dir={tmp_path}", "model.tiny={}"]), tmp_path / "config.yaml")
    write_results(paths.predictions, paths.root)  # now a run folder: results.json holds its effects too
    # split one prediction file into two shard files: `cuelab report` merges them
    f = paths.predictions / "finetuned__plain.jsonl"
    lines = f.read_text().splitlines(keepends=True)
    (paths.predictions / "finetuned__plain.shard0of2.jsonl").write_text("".join(lines[:30]))
    (paths.predictions / "finetuned__plain.shard1of2.jsonl").write_text("".join(lines[30:]))
    before = (paths.root / "results.json").read_text()
    f.unlink()
    (paths.root / "results.json").unlink()
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (paths.root / "results.json").read_text() == before
    assert (paths.report / "report.html").exists()
