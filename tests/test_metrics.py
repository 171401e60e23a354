"""Statistics of the results table, checked against scipy / statsmodels / hand formulas on constructed data."""

import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from cuelab.evaluate.metrics import (clustered_diff, mcnemar_exact, wilson, write_results)
from cuelab.evaluate.predictions import PredictionFile, predictions_path, read_predictions, record
from cuelab.fsutil import repair_partial_line


@pytest.mark.parametrize("b,c", [(12, 3), (0, 5), (7, 7), (40, 25), (1, 0)])
def test_mcnemar_exact_matches_binomial_test(b, c):
    # exact McNemar = two-sided binomial test of b successes in b + c trials at p = 0.5
    assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_on_constructed_table_and_no_discordant_pairs():
    # 2x2 table of (plain right?, cue right?): 50 both, b=12 only plain, c=3 only cue, 35 neither
    assert mcnemar_exact(12, 3) == pytest.approx(0.03515625, rel=1e-6)  # 2 * P(X <= 3), X ~ Bin(15, .5)
    assert mcnemar_exact(0, 0) == 1.0


@pytest.mark.parametrize("k,n", [(79, 100), (0, 20), (20, 20), (1, 3)])
def test_wilson_interval_formula(k, n):
    p, z = k / n, norm.ppf(0.975)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-9) and hi == pytest.approx(min(1.0, centre + half),
                                                                                        abs=1e-9)
    assert math.isnan(wilson(0, 0)[0])


def test_clustered_difference_matches_hand_formula_and_widens_with_clustering():
    rng = np.random.default_rng(0)
    videos = np.repeat(np.arange(30), 3)  # 30 videos, 3 questions each
    # video-level effect: questions of one video move together
    shift = np.repeat(rng.random(30) < 0.3, 3)
    a = ((rng.random(90) < 0.8) | shift).astype(int)
    b = (rng.random(90) < 0.7).astype(int)
    res = clustered_diff(a, b, videos)
    d = a - b
    n, g = len(d), 30
    sums = np.array([(d[videos == v] - d.mean()).sum() for v in range(g)])
    se = math.sqrt(g / (g - 1) * (sums ** 2).sum() / n ** 2)  # CR1 cluster-robust SE of a mean
    assert res["diff"] == pytest.approx(d.mean()) and res["clusters"] == 30 and res["n"] == 90
    assert res["se"] == pytest.approx(se, rel=1e-9)
    assert res["ci_low"] == pytest.approx(d.mean() - 1.959964 * se, abs=1e-6)
    # with one question per video the clustered SE is the usual one (times the CR1 factor)
    single = clustered_diff(a, b, np.arange(90))
    iid = math.sqrt(((d - d.mean()) ** 2).sum() / n ** 2 * n / (n - 1))
    assert single["se"] == pytest.approx(iid, rel=1e-9)
    # identical arms: difference exactly 0 with a zero-width interval
    same = clustered_diff(a, a, videos)
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0


def _write(tmp_path, model, cond, outcomes, failed=()):
    pf = PredictionFile(predictions_path(tmp_path, model, cond))
    recs = []
    for i, ok in enumerate(outcomes):
        q = {"id": f"q{i}", "video": f"v{i // 2}", "kind": "object" if i % 2 else "verb", "answer_index": 0}
        if i in failed:
            recs.append(record(q, model, cond, error="cannot decode"))
        else:
            recs.append(record(q, model, cond, [0.0] * 4, [0.0] * 4, 0 if ok else 1))
    pf.append(recs)


def test_results_files_from_constructed_predictions(tmp_path):
    # plain right on 0..59, box right on 0..49 and 60..64 (b = 10 only plain, c = 5 only box); q99 failed in box
    plain = [i < 60 for i in range(100)]
    box = [i < 50 or 60 <= i < 65 for i in range(100)]
    _write(tmp_path, "pretrained", "plain", plain)
    _write(tmp_path, "pretrained", "box", box, failed={99})
    _write(tmp_path, "pretrained", "blind", [i % 4 == 0 for i in range(100)])
    payload = write_results(tmp_path / "predictions", tmp_path / "results")
    rows = {(r["condition"], r["kind"]): r for r in payload["accuracy"]}
    assert rows[("plain", "all")]["n"] == 100 and rows[("plain", "all")]["accuracy"] == 0.6
    assert rows[("box", "all")]["n"] == 99 and rows[("box", "all")]["failed"] == 1
    assert rows[("blind", "all")]["accuracy"] == 0.25
    box_all = rows[("box", "all")]
    assert (box_all["only_this_right"], box_all["only_plain_right"]) == (5, 10)  # q99 (wrong in plain) left out
    assert box_all["mcnemar_p"] == pytest.approx(binomtest(5, 15, 0.5).pvalue, abs=1e-6)
    assert box_all["paired_n"] == 99 and box_all["diff_vs_plain"] == pytest.approx(-5 / 99, abs=1e-6)
    assert box_all["diff_ci_low"] < box_all["diff_vs_plain"] < box_all["diff_ci_high"]
    assert rows[("blind", "all")]["diff_vs_plain"] == pytest.approx(-0.35, abs=1e-6)
    assert rows[("plain", "all")]["ci_low"] == pytest.approx(wilson(60, 100)[0], abs=1e-6)
    with open(tmp_path / "results" / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert {(r["model"], r["condition"], r["kind"]) for r in csv_rows} == {
        ("pretrained", c, k) for c in ("plain", "box", "blind") for k in ("all", "object", "verb")}
    assert json.loads((tmp_path / "results" / "results.json").read_text())["failed"] == 1


def test_prediction_file_resume_cuts_partial_line(tmp_path):
    path = predictions_path(tmp_path, "finetuned", "box+hint")
    assert path.name == "finetuned__box+hint.jsonl"
    q = [{"id": f"q{i}", "video": "v", "kind": "verb", "answer_index": 1} for i in range(3)]
    pf = PredictionFile(path)
    pf.append([record(q[0], "finetuned", "box+hint", [0.1] * 4, [0.1] * 4, 1)])
    with open(path, "a") as f:
        f.write('{"question_id": "q1", "model": "fine')  # killed mid-write
    assert repair_partial_line(path) and not repair_partial_line(path)
    with open(path, "a") as f:
        f.write('{"question_id": "q1", "mod')
    pf = PredictionFile(path)
    assert pf.done == {"q0"} and [x["id"] for x in pf.todo(q)] == ["q1", "q2"]
    pf.append([record(x, "finetuned", "box+hint", [0.1] * 4, [0.1] * 4, 1) for x in q])  # q0 not duplicated
    assert [r["question_id"] for r in read_predictions(path)] == ["q0", "q1", "q2"]
    assert len(path.read_text().splitlines()) == 3
    with pytest.raises(Exception, match="model"):
        predictions_path(tmp_path, "a/b", "plain")
