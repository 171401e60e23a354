"""The report's protocol table, the checkpoint behind each model's rows, and `cuelab report RUN --compare OTHER`:
two fake runs (real prediction and results formats), one per protocol, set side by side."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.config import load_config, save_config
from cuelab.fsutil import write_jsonl
from cuelab.run_layout import RunPaths
from cuelab.report.build import build_report
from cuelab.report.protocols import load_other_run
from tests.test_cli_errors import fails_in_one_line
from tests.test_report import _assert_report_matches_results, _close, _md_tables, _pct

MODEL = "Qwen/Qwen3-VL-2B-Instruct"
STUDY_CONDS = {"plain": 0.0, "first_study_listpos": -0.05}
CUELAB_CONDS = {"plain": 0.0, "box": 0.1, "trajectory": -0.1, "blind": -0.3}


def _fake_protocol_run(root, protocol: str, conditions: dict[str, float], overrides=(), kinds=None, seed=0):
    """A run folder as the pipeline leaves it: config.yaml, test questions, predictions of both models under
    `conditions` (each with its own accuracy shift), results.json, the eval stage's marker and a LoRA adapter."""
    from cuelab.evaluate.metrics import write_results

    cfg = load_config(None, [f"output_dir={root}", f"protocol={protocol}", f"model.name_or_path={MODEL}",
                             *overrides])
    save_config(cfg, root / "config.yaml")
    paths = RunPaths(root)
    kinds = kinds or (["object", "verb"] if protocol == "first-study" else ["object", "verb", "referential"])
    questions = [{"id": f"{protocol}-v{i // len(kinds)}-{k}", "video": f"v{i // len(kinds)}", "kind": k}
                 for i, k in zip(range(24 * len(kinds)), kinds * 24)]
    write_jsonl(paths.questions / "test.jsonl", questions)
    rng = np.random.default_rng(seed)
    for model, p in (("pretrained", 0.5), ("finetuned", 0.8)):
        for cond, shift in conditions.items():
            rows = [{"question_id": q["id"], "model": model, "condition": cond, "choice_index": 0,
                     "scores": [0.0] * 4, "correct": bool(rng.random() < p + shift), "kind": q["kind"],
                     "video": q["video"]} for q in questions]
            write_jsonl(paths.predictions / f"{model}__{cond}.jsonl", rows)
    write_results(paths.predictions, paths.root)
    (paths.models / "finetune" / "final").mkdir(parents=True)
    (paths.models / "finetune" / "final" / "adapter_config.json").write_text("{}")
    paths.stages.mkdir(parents=True)
    (paths.stages / "eval.json").write_text(json.dumps({"fingerprint": "f", "result": {}}))
    return cfg, paths


def _results(paths) -> dict:
    return json.loads((paths.root / "results.json").read_text())


def test_protocol_table_shows_each_switch_and_the_one_set_away(tmp_path):
    cfg, paths = _fake_protocol_run(tmp_path, "first-study", STUDY_CONDS, ["render.fps=null"])
    md, _ = build_report(cfg, paths)
    text = md.read_text()
    assert text.splitlines()[0].endswith("(protocol `first-study`)")
    table = {r["switch"]: r for r in _md_tables(text)["Protocol: `first-study`"]}
    from cuelab.protocol import SWITCHES

    assert list(table) == [f"`{s.path}`" for s in SWITCHES]
    fps = table["`render.fps`"]
    assert (fps["cuelab"], fps["first study"], fps["this run"], fps["as the study"]) == ("`null`", "`12.0`",
                                                                                         "`null`", "no")
    assert [s for s, r in table.items() if r["as the study"] == "no"] == ["`render.fps`"]
    assert table["`eval.rule`"]["this run"] == "`sampled`" and table["`eval.rule`"]["cuelab"] == "`sum`"
    assert table["`eval.conditions`"]["this run"] == '`["plain", "first_study_listpos"]`'
    assert ("This run sets 1 switch away from its `first-study` protocol: `render.fps` = `null` "
            "(the protocol's: `12.0`).") in text
    _assert_report_matches_results(text, _results(paths))  # the results tables still parse, headed by checkpoints


def test_cuelab_run_follows_its_protocol(tmp_path):
    cfg, paths = _fake_protocol_run(tmp_path, "cuelab", CUELAB_CONDS)
    text = build_report(cfg, paths)[0].read_text()
    rows = _md_tables(text)["Protocol: `cuelab`"]
    assert rows and all(r["as the study"] == "no" and r["this run"] == r["cuelab"] for r in rows)
    assert "This run follows the `cuelab` protocol in every switch." in text


def test_each_model_names_its_checkpoint(tmp_path):
    cfg, paths = _fake_protocol_run(tmp_path, "cuelab", CUELAB_CONDS)
    text = build_report(cfg, paths)[0].read_text()
    assert f"**Pretrained**\n\nCheckpoint: `{MODEL}`.\n" in text
    assert f"**Finetuned**\n\nCheckpoint: `{MODEL}` with the LoRA adapter `models/finetune/final`.\n" in text
    (paths.stages / "eval.json").unlink()  # predictions from `cuelab eval`: any model may have made them
    text = build_report(cfg, paths)[0].read_text()
    assert text.count("Checkpoint: not recorded (no eval stage in this run folder") == 2


def _two_runs(tmp_path):
    study = _fake_protocol_run(tmp_path / "study", "first-study", STUDY_CONDS, seed=1)
    cuelab = _fake_protocol_run(tmp_path / "cuelab", "cuelab", CUELAB_CONDS, seed=2)
    return study, cuelab


def _check_side(rows: list[dict], protocol: str, results: dict) -> int:
    """Every accuracy cell of `protocol`'s columns is that run's results.json value; returns the cells seen."""
    seen = 0
    for row in rows:
        cond = row[f"{protocol}: condition"]
        for r in results["accuracy"]:
            if cond and r["condition"] == cond and f"{protocol}: {r['kind']} % [95% CI]" in row:
                acc, lo, hi = _pct(row[f"{protocol}: {r['kind']} % [95% CI]"])
                assert _close(acc, r["accuracy"]) and _close(lo, r["ci_low"]) and _close(hi, r["ci_high"]), (r, row)
                if r["kind"] == "all":
                    assert int(row[f"{protocol}: n"]) == r["n"]
                seen += 1
    return seen


def _check_diffs(rows: list[dict], protocol: str, results: dict) -> int:
    seen = 0
    for row in rows:
        if not row[f"{protocol}: vs plain"]:
            continue
        cond = row[f"{protocol}: vs plain"].removesuffix(" - plain")
        c = next(c for c in results["comparisons"] if c["kind"] == "all" and c["condition"] == cond
                 and c["vs_condition"] == "plain" and c["model"] == c["vs_model"] == row["_model"])
        diff, lo, hi = _pct(row[f"{protocol}: points [95% CI]"])
        assert _close(diff, c["diff"]) and _close(lo, c["ci_low"]) and _close(hi, c["ci_high"]), (c, row)
        assert abs(float(row[f"{protocol}: McNemar p"]) - c["mcnemar_p"]) <= 5e-3 * max(c["mcnemar_p"], 1e-3)
        seen += 1
    return seen


def test_compare_sets_both_protocols_results_side_by_side(tmp_path):
    (cfg, paths), (_, other) = _two_runs(tmp_path)
    text = build_report(cfg, paths, compare=load_other_run(other.root, cfg))[0].read_text()
    assert "## Both protocols side by side" in text
    tables = _md_tables(text)
    res = {"first-study": _results(paths), "cuelab": _results(other)}
    for model in ("pretrained", "finetuned"):
        acc = tables[f"{model.capitalize()}, both protocols: accuracy"]
        # matched by role: plain with plain, the study's cue with cuelab's cues, blind alone
        assert [(r["role"], r["first-study: condition"], r["cuelab: condition"]) for r in acc] == [
            ("plain", "plain", "plain"), ("cue", "first_study_listpos", "box"), ("cue", "", "trajectory"),
            ("blind (no video)", "", "blind")]
        for p, results in res.items():
            expected = [r for r in results["accuracy"]
                        if r["model"] == model and r["kind"] in ("all", "object", "verb")]
            assert _check_side(acc, p, {"accuracy": expected}) == len(expected) > 0
        diffs = [{**r, "_model": model} for r in
                 tables[f"{model.capitalize()}, both protocols: each condition against plain, on that protocol's own "
                        "questions"]]
        assert _check_diffs(diffs, "first-study", res["first-study"]) == 1
        assert _check_diffs(diffs, "cuelab", res["cuelab"]) == 3  # box, trajectory, blind
    assert f"Pretrained checkpoints: `first-study` (this run): `{MODEL}`; `cuelab`" in text
    assert "`all` of the cuelab protocol includes its referential questions" in text


def test_compare_with_a_run_without_results_says_so(tmp_path):
    (cfg, paths), (_, other) = _two_runs(tmp_path)
    (other.root / "results.json").unlink()
    text = build_report(cfg, paths, compare=load_other_run(other.root, cfg))[0].read_text()
    section = text.split("## Both protocols side by side\n\n")[1].split("\n## ")[0].strip()
    assert section == f"`{other.root}` has no results.json (its eval stage has not run): nothing to set side by side."


def test_report_command_compare(tmp_path):
    (cfg, paths), (_, other) = _two_runs(tmp_path)
    same = _fake_protocol_run(tmp_path / "study2", "first-study", STUDY_CONDS)[1]
    four_b = _fake_protocol_run(tmp_path / "cuelab4b", "cuelab", CUELAB_CONDS,
                                ["model.name_or_path=Qwen/Qwen3-VL-4B-Instruct"])[1]
    run = str(paths.root)
    fails_in_one_line(["report", run, "--compare", tmp_path / "nowhere"], str(tmp_path / "nowhere" / "config.yaml"),
                      "not found")
    fails_in_one_line(["report", run, "--compare", same.root], "protocol", "other protocol")
    fails_in_one_line(["report", run, "--compare", four_b.root], "model.name_or_path", "4B")
    assert not (paths.report / "report.md").exists()  # refused before anything was written
    r = CliRunner().invoke(app, ["report", run, "--compare", str(other.root)])
    assert r.exit_code == 0, r.output
    assert "**Finetuned, both protocols: accuracy**" in (paths.report / "report.md").read_text()
