"""Accuracy with confidence intervals and paired tests, from prediction files to results.json / results.csv.

- Accuracy per (model, condition, kind) with a 95% Wilson interval (statsmodels `proportion_confint`).
  `kind` "all" pools every kind. Failed questions (video did not load) are counted apart and left out of n.
- Paired comparisons on the questions scored in both arms: the accuracy difference with a 95% CI that is
  cluster-robust by video (questions of one video are not independent: OLS of the per-question difference on a
  constant with statsmodels' cluster covariance, CR1 small-sample factor, normal quantiles), and the exact
  McNemar p-value (binomial test on the discordant pairs, statsmodels `mcnemar(exact=True)`).
  Every condition is compared with `plain` of the same model (cues, their `+hint` variants, the blind
  baseline); every model with `pretrained` on the same condition.
- Minimum detectable effect of each paired comparison (`mde_mcnemar`): the smallest |difference| McNemar's test
  detects with 80% power at two-sided alpha 0.05 given the comparison's n and discordance (Connor 1987), and the
  same for the effective n of the clustered design (`mde_clustered`, n divided by the design effect).
- When the predictions folder lies in a run folder (config.yaml, questions/test.jsonl), results.json also
  holds `effects` (cuelab.evaluate.effects: follow rate, referential accuracy against within-scene chance,
  cue effect by object size and object count, verdicts, the first study's detectability).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cuelab.fsutil import atomic_write_json, atomic_write_text

ALL = "all"
MIN_CLUSTERS = 5  # fewer videos than this: no clustered CI (NaN)
ALPHA, POWER = 0.05, 0.80  # the minimum detectable effect's test level and power
CI_METHOD = ("Wilson score interval for accuracy; difference CI: cluster-robust (CR1, clustered by video) "
             "standard error of the mean paired difference, normal 95%, none under 5 videos; "
             "McNemar exact (binomial) p-value; minimum detectable effect: McNemar, 80% power, two-sided "
             "alpha 0.05, from n and the discordant share (Connor 1987), and for the clustered design from n "
             "over the design effect")


def wilson(correct: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """95% Wilson score interval of correct/n (NaN when n == 0)."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(correct, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar p-value from the discordant counts b (only A right) and c (only B right)."""
    from statsmodels.stats.contingency_tables import mcnemar

    if b + c == 0:
        return 1.0
    return float(mcnemar([[0, b], [c, 0]], exact=True).pvalue)


def mcnemar_power(n: float, discordance: float, delta: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided McNemar test on n pairs whose discordant share is `discordance` (p10 + p01) when
    the true paired difference is `delta` (p10 - p01). Connor's normal approximation (R. J. Connor 1987,
    "Sample size for testing differences in proportions for the paired-sample design", Biometrics 43:207-211,
    p. 209): power = Phi((|delta| sqrt(n) - z_{1-alpha/2} sqrt(psi)) / sqrt(psi - delta^2)), psi = discordance
    (the far tail is left out, as Connor does)."""
    from scipy.stats import norm

    psi, d = float(discordance), abs(float(delta))
    if n <= 0 or psi <= 0 or d > psi:
        return math.nan
    if d == psi:  # every discordant pair one way: no variance left under the alternative
        return 1.0 if d * math.sqrt(n) > norm.ppf(1 - alpha / 2) * math.sqrt(psi) else 0.0
    return float(norm.cdf((d * math.sqrt(n) - norm.ppf(1 - alpha / 2) * math.sqrt(psi)) / math.sqrt(psi - d * d)))


def mcnemar_pairs(discordance: float, delta: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs needed (not rounded) for the McNemar test to detect `delta` with `power` (Connor 1987, p. 209):
    n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2."""
    from scipy.stats import norm

    psi, d = float(discordance), abs(float(delta))
    if d == 0 or d > psi:
        return math.inf
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return float((za * math.sqrt(psi) + zb * math.sqrt(psi - d * d)) ** 2 / (d * d))


def mde_mcnemar(n: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a paired comparison: the smallest |p10 - p01| that the two-sided McNemar test
    on n pairs with discordant share `discordance` detects with `power` at level `alpha`, i.e. Connor's (1987)
    sample-size equation delta sqrt(n) = z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2) solved for
    delta in (0, psi] (scipy brentq; the left side grows and the right side falls with delta, so the root is
    unique). The discordance is held at its observed value, as conditional power calculations do. NaN when
    there is nothing to compute (n == 0, no discordant pair); inf when no difference the discordance allows is
    detectable (too few discordant pairs for any effect to reach 80% power)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    psi = float(discordance)
    if not n or n <= 0 or not psi > 0:
        return math.nan
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)

    def gap(d: float) -> float:
        return d * math.sqrt(n) - za * math.sqrt(psi) - zb * math.sqrt(max(psi - d * d, 0.0))

    if gap(psi) < 0:
        return math.inf
    return float(brentq(gap, 0.0, psi, xtol=1e-12))


def clustered_diff(a: np.ndarray, b: np.ndarray, clusters: np.ndarray, alpha: float = 0.05) -> dict:
    """Mean of a - b (0/1 arrays over the same questions) with a CI clustered by `clusters` (video ids)."""
    import statsmodels.api as sm
    from scipy.stats import norm

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    groups = pd.factorize(pd.Series(clusters))[0]
    n_clusters = int(groups.max() + 1) if n else 0
    out = {"n": n, "clusters": n_clusters, "diff": float(d.mean()) if n else math.nan,
           "se": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n < 2 or n_clusters < MIN_CLUSTERS:  # a cluster-robust SE from a handful of videos means little
        return out
    if np.all(d == d[0]):  # no variation: the estimate is exact (the OLS covariance is 0/0 here)
        out.update(se=0.0, ci_low=float(d[0]), ci_high=float(d[0]))
        return out
    fit = sm.OLS(d, np.ones((n, 1))).fit(cov_type="cluster", cov_kwds={"groups": groups})
    se = float(fit.bse[0])
    z = float(norm.ppf(1 - alpha / 2))
    out.update(se=se, ci_low=out["diff"] - z * se, ci_high=out["diff"] + z * se)
    return out


def paired(df_a: pd.DataFrame, df_b: pd.DataFrame) -> dict:
    """Compare arm A with arm B on the questions scored (not failed) in both."""
    m = df_a.merge(df_b, on="question_id", suffixes=("_a", "_b"))
    a, b = m["correct_a"].astype(int).to_numpy(), m["correct_b"].astype(int).to_numpy()
    res = clustered_diff(a, b, m["video_a"].to_numpy())
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    res.update(acc_a=float(a.mean()) if len(a) else math.nan, acc_b=float(b.mean()) if len(b) else math.nan,
               only_a=only_a, only_b=only_b, mcnemar_p=mcnemar_exact(only_a, only_b) if len(a) else math.nan)
    res.update(detectable(res))
    return res


def detectable(res: dict) -> dict:
    """The minimum detectable effect of one paired comparison (`paired`'s dict): discordant share, MDE for
    independent pairs, the design effect of clustering by video (clustered over independent variance of the
    mean difference) and the MDE at the effective n = n / design effect, the one that matches the clustered CI."""
    n = res["n"]
    psi = (res["only_a"] + res["only_b"]) / n if n else math.nan
    mde = mde_mcnemar(n, psi)
    var_iid = (psi - res["diff"] ** 2) / (n - 1) if n > 1 else math.nan  # sample variance of d over n
    deff = res["se"] ** 2 / var_iid if var_iid and var_iid > 0 and not math.isnan(res["se"]) else math.nan
    mde_cl = mde_mcnemar(n / deff, psi) if deff and deff > 0 and not math.isnan(deff) else mde
    return {"discordance": psi, "mde": mde, "design_effect": deff, "mde_clustered": mde_cl}


def _with_all(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.assign(kind=ALL)], ignore_index=True)


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, condition, kind): n, correct, failed, accuracy, ci_low, ci_high."""
    rows = []
    for (model, cond, kind), g in _with_all(df).groupby(["model", "condition", "kind"], sort=True):
        ok = g[~g["failed"]]
        n, correct = len(ok), int(ok["correct"].sum())
        lo, hi = wilson(correct, n)
        rows.append({"model": model, "condition": cond, "kind": kind, "n": n, "correct": correct,
                     "failed": int(g["failed"].sum()), "accuracy": correct / n if n else math.nan,
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def comparisons(df: pd.DataFrame, reference_condition: str = "plain",
                reference_model: str = "pretrained") -> pd.DataFrame:
    """Paired comparisons: each condition vs `plain` (same model), each model vs `pretrained` (same condition)."""
    ok = _with_all(df[~df["failed"]])
    keys = sorted(set(zip(ok["model"], ok["condition"])))
    pairs = [((m, c), (m, reference_condition)) for m, c in keys
             if c != reference_condition and (m, reference_condition) in keys]
    pairs += [((m, c), (reference_model, c)) for m, c in keys
              if m != reference_model and (reference_model, c) in keys]
    rows = []
    for (ma, ca), (mb, cb) in pairs:
        for kind in sorted(set(ok["kind"])):
            sel_a = ok[(ok["model"] == ma) & (ok["condition"] == ca) & (ok["kind"] == kind)]
            sel_b = ok[(ok["model"] == mb) & (ok["condition"] == cb) & (ok["kind"] == kind)]
            if sel_a.empty or sel_b.empty:
                continue
            res = paired(sel_a[["question_id", "correct", "video"]], sel_b[["question_id", "correct", "video"]])
            rows.append({"model": ma, "condition": ca, "vs_model": mb, "vs_condition": cb, "kind": kind, **res})
    return pd.DataFrame(rows)


def load_predictions(pred_dir: str | Path) -> pd.DataFrame:
    """Every prediction file in `pred_dir` as one frame (one row per model, condition, question; a duplicate
    line from a shard overlap keeps its first occurrence)."""
    from cuelab.evaluate.predictions import read_predictions

    rows = []
    for path in sorted(Path(pred_dir).glob("*.jsonl")):
        rows += read_predictions(path)
    cols = ["question_id", "model", "condition", "kind", "video", "correct", "failed", "choice_index"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys([*rows[0], *cols])))
    df["failed"] = df.get("failed", False)
    df["failed"] = df["failed"].fillna(False).astype(bool)
    df["correct"] = df["correct"].fillna(False).astype(bool)
    df["kind"] = df["kind"].fillna("unknown")
    return df.drop_duplicates(["model", "condition", "question_id"], keep="first")[cols].reset_index(drop=True)


def _clean(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):  # NaN and inf (an MDE no discordance allows) have no JSON number
        return None if not math.isfinite(v) else round(float(v), 6)
    return v


def json_records(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """The CSV table: accuracy rows with their comparison to `plain` of the same model beside them."""
    acc = accuracy_table(df)
    comp = comparisons(df)
    if comp.empty:
        return acc
    vs_plain = comp[(comp["vs_condition"] == "plain") & (comp["vs_model"] == comp["model"])]
    vs_plain = vs_plain[["model", "condition", "kind", "n", "diff", "ci_low", "ci_high", "only_a", "only_b",
                         "mcnemar_p", "mde_clustered"]].rename(columns={
        "n": "paired_n", "diff": "diff_vs_plain", "ci_low": "diff_ci_low", "ci_high": "diff_ci_high",
        "only_a": "only_this_right", "only_b": "only_plain_right", "mde_clustered": "mde_vs_plain"})
    return acc.merge(vs_plain, on=["model", "condition", "kind"], how="left")


def write_results(pred_dir: str | Path, out_dir: str | Path, run_dir: str | Path | None = None) -> dict:
    """Read every prediction file in `pred_dir`, write results.json and results.csv to `out_dir`. `effects`
    (cuelab.evaluate.effects) reads the questions, boxes and frame sizes of the run folder `run_dir`; by default
    the predictions folder's parent, when that is a run folder (config.yaml and questions/test.jsonl), so the
    eval stage, `cuelab results` and `cuelab report` on a run's predictions give the same results.json."""
    from cuelab.evaluate.effects import effects_payload, question_facts, run_sources

    df = load_predictions(pred_dir)
    table = results_table(df) if len(df) else pd.DataFrame()
    comp = comparisons(df) if len(df) else pd.DataFrame()
    sources = run_sources(run_dir if run_dir is not None else Path(pred_dir).parent)
    facts = question_facts(sources) if sources is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"method": CI_METHOD, "questions": int(len(df)), "failed": int(df["failed"].sum()) if len(df) else 0,
               "accuracy": json_records(table), "comparisons": json_records(comp),
               "effects": effects_payload(df, comp, facts)}
    atomic_write_json(out / "results.json", payload)
    atomic_write_text(out / "results.csv", table.to_csv(index=False, float_format="%.6g"))
    return payload


def format_table(payload: dict, kind: str = ALL) -> str:
    """A short plain-text table of the `all` rows (what `cuelab results` prints)."""
    lines = [f"{'model':<12} {'condition':<18} {'n':>5} {'acc':>7} {'95% CI':>17} {'vs plain':>9} "
             f"{'95% CI':>17} {'McNemar p':>9}"]
    for r in payload["accuracy"]:
        if r["kind"] != kind:
            continue
        ci = f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        d = r.get("diff_vs_plain")
        dci = f"[{_pct(r.get('diff_ci_low'))}, {_pct(r.get('diff_ci_high'))}]" if d is not None else ""
        p = f"{r['mcnemar_p']:.3g}" if r.get("mcnemar_p") is not None else ""
        lines.append(f"{r['model']:<12} {r['condition']:<18} {r['n']:>5} {_pct(r['accuracy']):>7} {ci:>17} "
                     f"{_pct(d) if d is not None else '':>9} {dci:>17} {p:>9}")
    return "\n".join(lines)


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"
