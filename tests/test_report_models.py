"""`cuelab report RUN --models OTHER`: one table across models x conditions and one cue-effect figure, from two
copies of the demo --quick run, the second with known answers written into one prediction file and another
checkpoint in its config. Every number of the table is checked against values computed here by hand from the
prediction files (Wilson interval, CR1 cluster-robust CI, exact McNemar), not through cuelab.evaluate.metrics."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.config import load_config
from cuelab.evaluate.metrics import write_results
from cuelab.fsutil import read_jsonl, write_jsonl
from cuelab.model.families import FAMILIES
from cuelab.report.models import effects, load_model_run, load_other_runs, model_family, write_models_report
from cuelab.run_layout import RunPaths
from tests.test_cli_errors import fails_in_one_line
from tests.test_report import _md_tables, _pct

Z = 1.959963984540054
TABLE = "Accuracy and cue effect per model and condition"
OTHER_TYPE = "llava_onevision_test_type"  # a model_type no family claims: the label shows it as is


def _wilson(k: int, n: int) -> tuple[float, float]:
    p, z2 = k / n, Z * Z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), Z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return centre - half, centre + half


def _paired(cue: dict, plain: dict) -> dict:
    """cue - plain on the questions scored in both: mean, CR1 cluster-robust 95% CI by video, exact McNemar p."""
    common = sorted(set(cue) & set(plain))
    d = {q: int(cue[q]["correct"]) - int(plain[q]["correct"]) for q in common}
    n, mean = len(d), sum(d.values()) / len(d)
    resid = defaultdict(float)
    for q, v in d.items():
        resid[cue[q]["video"]] += v - mean
    g = len(resid)
    se = math.sqrt(g / (g - 1) * sum(e * e for e in resid.values()) / (n * n))
    b, c = sum(v == 1 for v in d.values()), sum(v == -1 for v in d.values())
    p = min(1.0, 2 * sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)) if b + c else 1.0
    return {"diff": mean, "lo": mean - Z * se, "hi": mean + Z * se, "p": p}


def _arms(run: Path) -> dict[tuple[str, str], dict[str, dict]]:
    """(model, condition) -> question id -> its prediction (failed ones left out), read from the files."""
    arms = defaultdict(dict)
    for f in sorted((run / "predictions").glob("*.jsonl")):
        for r in read_jsonl(f):
            if not r.get("failed"):
                arms[(r["model"], r["condition"])].setdefault(r["question_id"], r)
    return arms


def _near(shown: float, value: float) -> bool:
    return abs(shown - 100 * value) <= 0.05 + 1e-6


def _check_row(row: dict, arms: dict) -> None:
    arm = arms[(row["model"], row["condition"])]
    k, n = sum(bool(r["correct"]) for r in arm.values()), len(arm)
    acc, lo, hi = _pct(row["accuracy % [95% CI]"])
    assert int(row["n"]) == n and _near(acc, k / n), row
    assert _near(lo, _wilson(k, n)[0]) and _near(hi, _wilson(k, n)[1]), row
    if row["condition"] == "plain":
        assert row["vs plain: points [95% CI]"] == row["McNemar p"] == "", row
        return
    ref = _paired(arm, arms[(row["model"], "plain")])
    diff, dlo, dhi = _pct(row["vs plain: points [95% CI]"])
    assert _near(diff, ref["diff"]) and _near(dlo, ref["lo"]) and _near(dhi, ref["hi"]), (row, ref)
    assert abs(float(row["McNemar p"]) - ref["p"]) <= 5e-3 * ref["p"], (row, ref)


def _known_answers(run: Path) -> None:
    """The second run's fine-tuned model answers `box` right exactly on the questions of the first half of the
    videos (sorted), and names another checkpoint (a local folder whose config.json gives its model type)."""
    f = run / "predictions" / "finetuned__box.jsonl"
    rows = list(read_jsonl(f))
    videos = sorted({r["video"] for r in rows})
    write_jsonl(f, [{**r, "correct": r["video"] in videos[: len(videos) // 2]} for r in rows])
    ckpt = run / "other-checkpoint"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": OTHER_TYPE}))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"].update(tiny=None, name_or_path=str(ckpt))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _invoke(args: list) -> None:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def two_runs(demo_quick_run, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("models")
    a, b = base / "a", base / "b"
    shutil.copytree(demo_quick_run, a)
    shutil.copytree(demo_quick_run, b)
    _known_answers(b)
    _invoke(["report", b])  # its results.json from the rewritten predictions
    _invoke(["report", a, "--models", b])
    return a, b


def test_table_numbers_are_the_prediction_files(two_runs):
    a, b = two_runs
    text = (a / "report" / "models.md").read_text()
    rows = _md_tables(text)[TABLE]
    assert "Every run asks the same" in text and "questions" not in rows[0]
    arms = {"demo-quick (a)": _arms(a), "demo-quick (b)": _arms(b)}
    expected = {(run, m, c) for run, arm in arms.items() for (m, c) in arm}
    assert {(r["run"], r["model"], r["condition"]) for r in rows} == expected
    for row in rows:
        _check_row(row, arms[row["run"]])
    # the rewritten arm differs from its copy in the first run: the second "model" answers differently
    box = {r["run"]: r["accuracy % [95% CI]"] for r in rows if (r["model"], r["condition"]) == ("finetuned", "box")}
    assert box["demo-quick (a)"] != box["demo-quick (b)"]
    labels = {r["run"]: (r["family"], r["checkpoint"]) for r in rows}
    assert labels == {"demo-quick (a)": ("qwen3_vl", "tiny"),
                      "demo-quick (b)": (OTHER_TYPE, str(b / "other-checkpoint"))}


def test_figure_plots_each_cue_of_each_model(two_runs):
    a, b = two_runs
    png = a / "report" / "figures" / "models_cue_effect.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (a / "report" / "models.html").read_text()
    points = effects([load_model_run(a), load_model_run(b)])
    cues = ["box", "trajectory", "wrong_object"]  # eval.conditions but plain; the blind baseline is no cue
    assert len(points) == 2 * 2 * len(cues)
    assert [p.condition for p in points[:3]] == cues
    assert len({p.label for p in points}) == 4
    hand = _paired(_arms(b)[("finetuned", "box")], _arms(b)[("finetuned", "plain")])
    mine = next(p for p in points if p.label.endswith("other-checkpoint · finetuned") and p.condition == "box")
    assert abs(mine.diff - hand["diff"]) < 1e-5 and abs(mine.ci_low - hand["lo"]) < 1e-5


def test_runs_with_other_questions_are_tabled_and_flagged(two_runs, tmp_path):
    a, _ = two_runs
    c = tmp_path / "c"
    shutil.copytree(a, c, ignore=shutil.ignore_patterns("videos", "dataset", "models", "report"))
    drop = sorted({q["video"] for q in read_jsonl(c / "questions" / "test.jsonl")})[0]
    for f in [c / "questions" / "test.jsonl", *(c / "predictions").glob("*.jsonl")]:
        write_jsonl(f, [r for r in read_jsonl(f) if r["video"] != drop])
    write_results(c / "predictions", c)
    cfg = load_config(a / "config.yaml", [f"output_dir={a}"])
    md, _ = write_models_report(cfg, RunPaths(a), load_other_runs(a, [c]))
    text = md.read_text()
    assert "**The runs ask different test questions**" in text
    rows = _md_tables(text)[TABLE]
    assert {r["run"]: r["questions"] for r in rows} == {"demo-quick (a)": "A", "demo-quick (c)": "B"}
    arms = _arms(c)
    for row in rows:
        if row["run"] == "demo-quick (c)":
            _check_row(row, arms)


def _stamps(run: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and "videos" not in p.parts}


def test_a_folder_that_is_not_a_run_is_refused_before_anything_is_written(two_runs, tmp_path):
    a, b = two_runs
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    no_results = tmp_path / "no-results"
    no_results.mkdir()
    shutil.copy(a / "config.yaml", no_results / "config.yaml")
    before = _stamps(a)
    assert "no config.yaml" in fails_in_one_line(["report", a, "--models", b, "--models", empty], str(empty))
    assert "no results.json" in fails_in_one_line(["report", a, "--models", no_results], str(no_results))
    assert "given twice" in fails_in_one_line(["report", a, "--models", b, "--models", b], str(b))
    assert _stamps(a) == before


def test_model_family_of_the_label(tmp_path):
    tiny = load_config(None, ["model.tiny={}"])
    assert model_family(tiny) == "qwen3_vl"
    named = load_config(None, [f"model.family={next(iter(FAMILIES))}", "model.name_or_path=org/none"])
    assert model_family(named) == next(iter(FAMILIES))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    assert model_family(load_config(None, [f"model.name_or_path={tmp_path}"])) == "qwen3_vl"
    assert model_family(load_config(None, ["model.name_or_path=no-such-org/no-such-model"])).startswith("unknown")
