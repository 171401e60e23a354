"""Accuracy with confidence intervals and paired tests, from prediction files to results.json / results.csv.

- Accuracy per (model, condition, kind) with a 95% Wilson interval (statsmodels `proportion_confint`).
  `kind` "all" pools every kind. Failed questions (video did not load) are counted apart and left out of n.
- Paired comparisons on the questions scored in both arms: the accuracy difference with a 95% CI that is
  cluster-robust by video (questions of one video are not independent: OLS of the per-question difference on a
  constant with statsmodels' cluster covariance, CR1 small-sample factor, normal quantiles), and the exact
  McNemar p-value (binomial test on the discordant pairs, statsmodels `mcnemar(exact=True)`).
  Every condition is compared with `plain` of the same model (cues, their `+hint` variants, the blind
  baseline); every model with `pretrained` on the same condition.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cuelab.fsutil import atomic_write_json, atomic_write_text

ALL = "all"
MIN_CLUSTERS = 5  # fewer videos than this: no clustered CI (NaN)
CI_METHOD = ("Wilson score interval for accuracy; difference CI: cluster-robust (CR1, clustered by video) "
             "standard error of the mean paired difference, normal 95%, none under 5 videos; "
             "McNemar exact (binomial) p-value")


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
    return res


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
    cols = ["question_id", "model", "condition", "kind", "video", "correct", "failed"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    df["failed"] = df.get("failed", False)
    df["failed"] = df["failed"].fillna(False).astype(bool)
    df["correct"] = df["correct"].fillna(False).astype(bool)
    df["kind"] = df["kind"].fillna("unknown")
    return df.drop_duplicates(["model", "condition", "question_id"], keep="first")[cols].reset_index(drop=True)


def _clean(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else round(float(v), 6)
    return v


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """The CSV table: accuracy rows with their comparison to `plain` of the same model beside them."""
    acc = accuracy_table(df)
    comp = comparisons(df)
    if comp.empty:
        return acc
    vs_plain = comp[(comp["vs_condition"] == "plain") & (comp["vs_model"] == comp["model"])]
    vs_plain = vs_plain[["model", "condition", "kind", "n", "diff", "ci_low", "ci_high", "only_a", "only_b",
                         "mcnemar_p"]].rename(columns={
        "n": "paired_n", "diff": "diff_vs_plain", "ci_low": "diff_ci_low", "ci_high": "diff_ci_high",
        "only_a": "only_this_right", "only_b": "only_plain_right"})
    return acc.merge(vs_plain, on=["model", "condition", "kind"], how="left")


def write_results(pred_dir: str | Path, out_dir: str | Path) -> dict:
    """Read every prediction file in `pred_dir`, write results.json and results.csv to `out_dir`."""
    df = load_predictions(pred_dir)
    table = results_table(df) if len(df) else pd.DataFrame()
    comp = comparisons(df) if len(df) else pd.DataFrame()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"method": CI_METHOD, "questions": int(len(df)), "failed": int(df["failed"].sum()) if len(df) else 0,
               "accuracy": _records(table), "comparisons": _records(comp)}
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
