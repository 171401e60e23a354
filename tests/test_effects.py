"""Cue effects on hand-made prediction files with known answers: follow rate under wrong_object, referential
accuracy against within-scene chance, size and object-count bins, the minimum detectable effect against
published McNemar power calculations and a simulation, verdict rows, and the verdict paragraph of a real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from cuelab.evaluate.effects import (HELPS, HURTS, NO_EFFECT, NOT_MEASURED, QuestionFacts, binned_effects,
                                     classify, first_study_detectable, follow_rates, objects_bin,
                                     referential_accuracy, size_bin, verdicts, video_facts)
from cuelab.evaluate.metrics import comparisons, load_predictions, mcnemar_pairs, mcnemar_power, mde_mcnemar
from cuelab.fsutil import write_jsonl
from cuelab.question import Question
from cuelab.report.verdict import verdict_label, verdict_paragraph
from cuelab.tracks import VideoTracks
from cuelab.video.cues import get_cue


def _write(tmp_path, model: str, condition: str, picks: dict[str, int], facts: list[QuestionFacts]) -> None:
    """One prediction file in the real format: `picks` maps a question id to the chosen choice."""
    by_id = {f.question_id: f for f in facts}
    rows = [{"question_id": q, "model": model, "condition": condition, "choice_index": c, "scores": [0.0] * 4,
             "correct": c == by_id[q].answer_index, "kind": by_id[q].kind, "video": by_id[q].video}
            for q, c in picks.items()]
    write_jsonl(tmp_path / "predictions" / f"{model}__{condition}.jsonl", rows)


def _wilson(k: int, n: int) -> tuple[float, float]:
    p, z = k / n, norm.ppf(0.975)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


# --- follow rate --------------------------------------------------------------------------------------------------

def _follow_facts() -> list[QuestionFacts]:
    """Ten referential questions on ten videos, answer at 0; eight have a choice (index 1) naming the marked
    object, two do not (a one-object scene's decoy marks no object)."""
    return [QuestionFacts(f"q{i}", f"v{i}", "referential", 4, 0, "0", 2, 0.03, "1" if i < 8 else None,
                          1 if i < 8 else None, 2) for i in range(10)]


def test_follow_rate_exact_value_and_ci(tmp_path):
    facts = _follow_facts()
    # wrong_object: 6 of the 8 eligible pick the marked object (index 1), one the answer, one another choice
    _write(tmp_path, "m", "wrong_object", {f"q{i}": c for i, c in enumerate([1, 1, 1, 1, 1, 1, 0, 3, 1, 0])}, facts)
    # plain: the same choice in 2 of the 8
    _write(tmp_path, "m", "plain", {f"q{i}": c for i, c in enumerate([1, 1, 0, 0, 0, 0, 0, 0, 1, 1])}, facts)
    rows = follow_rates(load_predictions(tmp_path / "predictions"), facts)
    r = next(x for x in rows if x.kind == "all")
    assert (r.answers, r.eligible, r.follows, r.asked) == (10, 8, 6, 1)  # q8, q9 not eligible: no choice names it
    assert r.rate == 0.75 and (r.ci_low, r.ci_high) == pytest.approx(_wilson(6, 8), abs=1e-9)
    assert r.plain_rate == 0.25 and r.diff_vs_plain == pytest.approx(0.5) and r.chance == 0.25
    # per question: picked the marked choice under wrong_object minus on plain
    d = np.array([1, 1, 1, 1, 1, 1, 0, 0]) - np.array([1, 1, 0, 0, 0, 0, 0, 0])
    se = math.sqrt(8 / 7 * ((d - d.mean()) ** 2).sum() / 64)  # CR1, one question a video
    assert r.diff_ci_low == pytest.approx(0.5 - norm.ppf(0.975) * se, abs=1e-6)
    assert [x.kind for x in rows] == ["all", "referential"]


def test_follow_rate_without_eligible_questions_is_nan_not_zero(tmp_path):
    facts = [QuestionFacts(f"q{i}", f"v{i}", "verb", 4, 0, "0", 2, 0.03, "1", None, None) for i in range(3)]
    _write(tmp_path, "m", "wrong_object", {"q0": 0, "q1": 1, "q2": 2}, facts)
    r = follow_rates(load_predictions(tmp_path / "predictions"), facts)[0]
    assert (r.answers, r.eligible, r.follows) == (3, 0, 0) and math.isnan(r.rate) and math.isnan(r.ci_low)


# --- facts from questions and tracks ------------------------------------------------------------------------------

def _question(qid, kind, target, choices, answer, colours=("red", "blue", "green")):
    rec = {"id": qid, "video": "v", "kind": kind, "question": "The object marked in red is _____.",
           "choices": choices, "answer": choices[answer], "answer_index": answer, "target_object": target,
           "cue_colors": dict(zip(["0", "1", "2"], colours))}
    return Question.from_record(rec, "test.jsonl")


def test_facts_name_the_object_wrong_object_marks_in_the_asked_colour():
    box = {t: (16.0, 12.0, 32.0, 24.0) for t in range(4)}  # 16 x 12 in 160 x 120: 1% of the frame
    tracks = VideoTracks("v", {"0": box, "1": {t: (60.0, 40.0, 100.0, 70.0) for t in range(4)},
                               "2": {t: (100.0, 80.0, 150.0, 118.0) for t in range(4)}})
    qs = [_question("v-ref-0", "referential", "0", ["cube", "ring", "ball", "star"], 0),
          _question("v-ref-1", "referential", "1", ["cube", "ring", "ball", "star"], 1),
          _question("v-ref-2", "referential", "2", ["cube", "ring", "ball", "star"], 2),
          _question("v-obj-0", "object", "0", ["cube", "pen", "cup", "box"], 0)]
    facts = {f.question_id: f for f in video_facts(qs, tracks, (160, 120), get_cue("wrong_object"))}
    # wrong_object deals the slot colours again to the objects other than 0: 1 is red, 2 is blue, none green
    assert (facts["v-ref-0"].marked_object, facts["v-ref-0"].marked_index) == ("1", 1)
    assert (facts["v-ref-1"].marked_object, facts["v-ref-1"].marked_index) == ("2", 2)
    assert facts["v-ref-2"].marked_object is None
    assert (facts["v-obj-0"].marked_object, facts["v-obj-0"].marked_index) == ("1", None)  # no choice names it
    assert facts["v-ref-0"].box_share == pytest.approx(0.01) and facts["v-ref-0"].n_objects == 3
    assert facts["v-ref-0"].scene_choices == 3 and facts["v-obj-0"].scene_choices is None
    one = VideoTracks("v", {"0": box})  # one object: the decoy box marks no object
    only = video_facts(qs[:1], one, (160, 120), get_cue("wrong_object"))[0]
    assert only.marked_object is None and only.marked_index is None


def test_referential_verb_follow_choice_is_the_marked_objects_verb():
    """Under wrong_object the red cue sits on object 1: following it on "what is done to the object marked in
    red" means answering object 1's verb, which its own referential_verb question gives."""
    box = {t: (16.0, 12.0, 32.0, 24.0) for t in range(4)}
    tracks = VideoTracks("v", {"0": box, "1": {t: (60.0, 40.0, 100.0, 70.0) for t in range(4)}})
    qs = [_question("v-rv-0", "referential_verb", "0", ["poking", "dropping", "lifting", "shaking"], 0),
          _question("v-rv-1", "referential_verb", "1", ["poking", "dropping", "lifting", "shaking"], 1)]
    facts = {f.question_id: f for f in video_facts(qs, tracks, (160, 120), get_cue("wrong_object"))}
    assert (facts["v-rv-0"].marked_object, facts["v-rv-0"].marked_index) == ("1", 1)  # "dropping"
    assert facts["v-rv-0"].scene_choices == 2  # the two motions of the scene: within-scene chance 1/2


# --- referential accuracy and within-scene chance ------------------------------------------------------------------

def test_referential_accuracy_against_within_scene_chance(tmp_path):
    # scenes of 2 and 4 named objects: chance 1/2 and 1/4, averaged over the questions
    facts = [QuestionFacts(f"q{i}", f"v{i // 2}", "referential", 4, 0, str(i % 2), 2, 0.1, None, None,
                           2 if i < 4 else 4) for i in range(8)]
    _write(tmp_path, "m", "plain", {f"q{i}": 0 if i < 3 else 1 for i in range(8)}, facts)
    _write(tmp_path, "m", "box", {f"q{i}": 0 if i < 7 else 1 for i in range(8)}, facts)
    rows = {r.condition: r for r in referential_accuracy(load_predictions(tmp_path / "predictions"), facts)}
    assert rows["plain"].accuracy == 3 / 8 and rows["box"].accuracy == 7 / 8
    assert rows["plain"].chance == pytest.approx((4 * 0.5 + 4 * 0.25) / 8)
    assert rows["box"].diff_vs_plain == pytest.approx(0.5) and math.isnan(rows["plain"].diff_vs_plain)


# --- bins ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("share,label", [(0.0, "<2%"), (0.0199, "<2%"), (0.02, "2-5%"), (0.0499, "2-5%"),
                                         (0.05, "5-15%"), (0.1499, "5-15%"), (0.15, ">=15%"), (0.9, ">=15%"),
                                         (None, "no box"), (float("nan"), "no box")])
def test_size_bins(share, label):
    assert size_bin(share) == label


def test_questions_land_in_their_size_and_object_count_bins(tmp_path):
    shares = [0.01, 0.01, 0.03, 0.03, 0.10, 0.10, 0.20, None]
    counts = [1, 1, 2, 2, 3, 3, 3, None]
    facts = [QuestionFacts(f"q{i}", f"v{i}", "object", 4, 0, "0", counts[i], shares[i]) for i in range(8)]
    _write(tmp_path, "m", "plain", {f"q{i}": 0 if i in (0, 2) else 1 for i in range(8)}, facts)
    _write(tmp_path, "m", "box", {f"q{i}": 0 if i in (0, 1, 2, 4) else 1 for i in range(8)}, facts)
    df = load_predictions(tmp_path / "predictions")
    size = {r.bin: r for r in binned_effects(df, facts, "object size")}
    assert list(size) == ["<2%", "2-5%", "5-15%", ">=15%", "no box"]
    assert [size[b].n for b in size] == [2, 2, 2, 1, 1]
    assert (size["<2%"].plain_accuracy, size["<2%"].cued_accuracy, size["<2%"].diff) == (0.5, 1.0, 0.5)
    assert (size["5-15%"].plain_accuracy, size["5-15%"].cued_accuracy) == (0.0, 0.5)
    objs = {r.bin: r for r in binned_effects(df, facts, "objects in the scene")}
    assert list(objs) == ["1", "2", "3", "unknown"] and [objs[b].n for b in objs] == [2, 2, 3, 1]
    assert objects_bin(2.0) == "2" and objects_bin(None) == "unknown"


# --- minimum detectable effect --------------------------------------------------------------------------------------

def test_mcnemar_sample_size_matches_published_examples():
    # powerandsamplesize.com (McNemar Z-test, 2-sided, after Connor 1987 p. 209): p01 .45, p10 .05 -> 23 pairs
    assert math.ceil(mcnemar_pairs(0.50, 0.40)) == 23
    # clinicaltrials-tools McNemar calculator (Connor 1987): discordant .45, |p10 - p01| .15 -> 155, power 80.1%
    assert math.ceil(mcnemar_pairs(0.45, 0.15)) == 155
    assert mcnemar_power(155, 0.45, 0.15) == pytest.approx(0.801, abs=5e-4)


@pytest.mark.parametrize("n,psi", [(23, 0.5), (155, 0.45), (388, 0.12), (2500, 0.068)])
def test_mde_is_the_effect_with_80_percent_power(n, psi):
    mde = mde_mcnemar(n, psi)
    assert mcnemar_power(n, psi, mde) == pytest.approx(0.80, abs=1e-6)
    assert mcnemar_pairs(psi, mde) == pytest.approx(n, rel=1e-6)


def test_mde_matches_a_simulated_mcnemar_test():
    """At the MDE, McNemar's test (normal, no continuity correction) rejects in ~80% of simulated runs."""
    rng = np.random.default_rng(0)
    n, psi = 400, 0.2
    mde = mde_mcnemar(n, psi)
    cells = rng.multinomial(n, [(psi + mde) / 2, (psi - mde) / 2, 1 - psi], size=20000)
    b, c = cells[:, 0], cells[:, 1]
    rejects = (b - c) ** 2 / np.maximum(b + c, 1) > norm.ppf(0.975) ** 2
    assert rejects.mean() == pytest.approx(0.80, abs=0.02)


def test_mde_edge_cases():
    assert math.isnan(mde_mcnemar(0, 0.2)) and math.isnan(mde_mcnemar(100, 0.0))
    assert mde_mcnemar(100, 0.02) == math.inf  # two discordant pairs: no effect reaches 80% power


def test_first_study_difference_detectability():
    checks = {c.assumption: c for c in first_study_detectable()}
    ind = checks["independent errors"]
    assert ind.discordance == pytest.approx(0.9729 * (1 - 0.9565) + 0.9565 * (1 - 0.9729))
    assert ind.diff == pytest.approx(0.0164) and ind.n == 2500
    assert ind.detectable and ind.mde == pytest.approx(mde_mcnemar(2500, ind.discordance))
    # a design effect of exactly max_design_effect leaves the difference at the MDE
    assert mde_mcnemar(2500 / ind.max_design_effect, ind.discordance) == pytest.approx(ind.diff, rel=1e-6)
    assert checks["fewest discordant pairs"].discordance == pytest.approx(0.0164)
    assert checks["most discordant pairs"].discordance == pytest.approx(0.0271 + 0.0435)


# --- verdicts -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,diff,lo,hi,verdict,reason", [
    (100, 0.10, 0.05, 0.15, HELPS, None),
    (100, -0.12, -0.16, -0.075, HURTS, None),
    (100, 0.01, -0.02, 0.04, NO_EFFECT, None),
    (100, 0.0, 0.0, 0.0, NO_EFFECT, None),
    (0, math.nan, math.nan, math.nan, NOT_MEASURED, "no question scored in both arms"),
    (12, 0.05, math.nan, math.nan, NOT_MEASURED, "too few videos for a clustered CI"),
])
def test_verdict_rows(n, diff, lo, hi, verdict, reason):
    assert classify(n, diff, lo, hi) == (verdict, reason)


def _verdict_run(tmp_path, conditions: dict[str, list[int]]):
    facts = [QuestionFacts(f"q{i}", f"v{i // 2}", "object", 4, 0) for i in range(40)]
    for cond, right in conditions.items():
        _write(tmp_path, "m", cond, {f"q{i}": 0 if i in right else 1 for i in range(40)}, facts)
    df = load_predictions(tmp_path / "predictions")
    return verdicts(df, comparisons(df))


def test_verdicts_from_prediction_files(tmp_path):
    rows = {v.condition: v for v in _verdict_run(tmp_path, {
        "plain": list(range(20)), "box": list(range(36)), "trajectory": list(range(2, 22)),
        "blind": list(range(10))})}
    assert set(rows) == {"box", "trajectory"}  # blind is a baseline, not a cue
    assert rows["box"].verdict == HELPS and rows["box"].diff == pytest.approx(0.4)
    assert rows["trajectory"].verdict == NO_EFFECT and rows["trajectory"].discordance == pytest.approx(0.1)
    label = verdict_label(json.loads(json.dumps(rows["trajectory"].__dict__)))
    assert label == f"{NO_EFFECT} (could detect >= {100 * rows['trajectory'].mde:.1f} points)"


def test_verdict_without_plain_or_questions_is_not_measured(tmp_path):
    rows = _verdict_run(tmp_path, {"box": list(range(10))})
    assert [(v.condition, v.verdict, v.reason) for v in rows] == [("box", NOT_MEASURED, "no plain condition")]
    assert verdict_label({"verdict": NOT_MEASURED, "reason": "no plain condition"}) == \
        "not measured (no plain condition)"
    empty = load_predictions(tmp_path / "nothing")
    assert verdicts(empty, comparisons(empty) if len(empty) else empty) == []
    assert "Not measured" in verdict_paragraph({"verdicts": []}) and "Not measured" in verdict_paragraph(None)


def test_verdict_paragraph_is_written_from_the_numbers():
    effects = {"verdicts": [
        {"model": "pretrained", "condition": "box", "verdict": HURTS, "reason": None, "n": 388, "diff": -0.119,
         "ci_low": -0.162, "ci_high": -0.075, "mde": 0.05, "discordance": 0.2},
        {"model": "pretrained", "condition": "trajectory", "verdict": NO_EFFECT, "reason": None, "n": 388,
         "diff": -0.023, "ci_low": -0.053, "ci_high": 0.007, "mde": 0.041, "discordance": 0.1}],
        "follow": [{"model": "pretrained", "kind": "all", "answers": 388, "eligible": 150, "follows": 18,
                    "rate": 0.12, "ci_low": 0.077, "ci_high": 0.182, "chance": 0.25, "plain_rate": 0.1}]}
    text = verdict_paragraph(effects)
    assert text.startswith("**Verdict.**") and "\n" not in text
    assert "box hurts, -11.9 points [-16.2, -7.5]" in text
    assert "trajectory no detectable effect (could detect >= 4.1 points), -2.3 points [-5.3, +0.7]" in text
    assert "12.0% [7.7, 18.2] of the 150 answers (of 388)" in text and "10.0%" in text


# --- a real run ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_demo_report_opens_with_the_verdict(demo_quick_run):
    results = json.loads((demo_quick_run / "results.json").read_text())
    effects = results["effects"]
    assert effects["measured"] and effects["follow"] and effects["referential"] and effects["by_size"]
    md = (demo_quick_run / "report" / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Results")
    assert "> " + verdict_paragraph(effects) in md
    for v in effects["verdicts"]:
        assert f"| {v['model']} | {v['condition']} | {verdict_label(v)} |" in md
    for title in ("Does the model follow the cue?", "Referential accuracy against within-scene chance",
                  "Cue effect by object size", "Cue effect by objects in the scene",
                  "Could the first study detect its difference?"):
        assert f"### {title}" in md
    assert "<blockquote>\n<p><strong>Verdict.</strong>" in (demo_quick_run / "report" / "report.html").read_text()
