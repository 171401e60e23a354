"""Where the answer position's attention goes: lift inside the object box, mass on the cue's pixels, with and
without sink tokens; then means with 95% t-intervals over questions and paired differences.

Lift = (share of the video attention that falls inside the box) / (share of the frame area the box covers),
both over the temporal cells where the box is known; 1 means no preference, frame_area / box_area means all
video attention inside the box.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

METRICS = ["lift", "lift_ns", "mass_in", "mass_in_ns", "video_mass", "cue_mass", "cue_mass_ns", "cue_lift",
           "cue_lift_ns", "obj_only_lift", "obj_only_lift_ns"]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def region_mass(rows: np.ndarray, coverage: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, float]:
    """(share of the kept attention on the region, region's share of the kept area).
    rows (..., n) attention to the video tokens; coverage (n,) fraction of each token's cell in the region;
    keep (n,) bool tokens that count."""
    a = np.asarray(rows, np.float64) * keep
    f = np.asarray(coverage, np.float64) * keep
    share = f.sum() / keep.sum() if keep.any() else np.nan
    return _ratio((a * f).sum(-1), a.sum(-1)), share


def lift(rows: np.ndarray, coverage: np.ndarray, keep: np.ndarray) -> np.ndarray:
    mass, share = region_mass(rows, coverage, keep)
    return mass / share if share and share > 0 else np.full(mass.shape, np.nan)


def top_k(rows: np.ndarray, k: int) -> np.ndarray:
    """(..., k) indices of the k video tokens with the most attention (the sinks), highest first; ties by index."""
    rows = np.asarray(rows)
    order = np.argsort(-rows, axis=-1, kind="stable")
    return order[..., :k]


def sink_keep(n: int, sinks: np.ndarray) -> np.ndarray:
    """(L, n) bool: every token but the layer's sinks."""
    sinks = np.asarray(sinks, int)
    keep = np.ones((sinks.shape[0], n), bool)
    np.put_along_axis(keep, sinks, False, axis=1)
    return keep


def question_measures(rows: np.ndarray, video_mass: np.ndarray, box_cov: np.ndarray, box_valid: np.ndarray,
                      sinks: np.ndarray, cue_cov: np.ndarray | None = None,
                      obj_only_cov: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every measure of one question, per layer (and per head when rows is (L, H, n)).
    rows: attention to the video tokens; video_mass: total attention on video tokens (same leading shape);
    sinks (L, k): tokens left out in the *_ns variants; cue_cov / obj_only_cov: coverage of the cue's drawn
    pixels and of the object's pixels the cue did not draw over (None in the plain condition)."""
    rows = np.asarray(rows, np.float64)
    n = rows.shape[-1]
    per_head = rows.ndim == 3
    ns = sink_keep(n, sinks)  # (L, n)
    every = np.ones(n, bool)
    out: dict[str, np.ndarray] = {"video_mass": np.asarray(video_mass, np.float64)}

    def per_layer(fn, cov, keep_all, keep_ns):
        full = fn(rows, cov, keep_all)
        nos = np.stack([fn(rows[layer], cov, keep_all & keep_ns[layer]) for layer in range(rows.shape[0])])
        return full, nos

    mass = lambda r, c, k: region_mass(r, c, k)[0]  # noqa: E731
    out["lift"], out["lift_ns"] = per_layer(lift, box_cov, box_valid, ns)
    out["mass_in"], out["mass_in_ns"] = per_layer(mass, box_cov, box_valid, ns)
    if cue_cov is not None:
        out["cue_mass"], out["cue_mass_ns"] = per_layer(mass, cue_cov, every, ns)
        out["cue_lift"], out["cue_lift_ns"] = per_layer(lift, cue_cov, every, ns)
    if obj_only_cov is not None:
        out["obj_only_lift"], out["obj_only_lift_ns"] = per_layer(lift, obj_only_cov, box_valid, ns)
    if per_head:  # heads stay in *_heads; the main measures use the head-averaged row
        heads = {f"{k}_heads": v for k, v in out.items() if k in ("lift", "lift_ns")}
        mean_out = question_measures(rows.mean(1), np.asarray(video_mass).mean(-1), box_cov, box_valid, sinks,
                                     cue_cov, obj_only_cov)
        return {**mean_out, **heads}
    return out


# --- aggregation -----------------------------------------------------------------------------------------------

def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with a t-interval over the finite values; low/high NaN below 2 values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def _layer_values(rec: dict, metric: str, layer) -> float | None:
    vals = rec.get(metric)
    if vals is None:
        return None
    if layer == "mean":
        finite = [v for v in vals if v is not None and math.isfinite(v)]
        return float(np.mean(finite)) if finite else None
    return vals[layer]


def _r(x: float):
    return None if x is None or not math.isfinite(x) else round(float(x), 6) + 0.0  # no "-0.0"


def aggregate(records: list[dict], metrics: list[str] = METRICS) -> list[dict]:
    """Rows per (model, condition, layer) with mean, 95% CI and n of each metric; layer "mean" averages each
    question's layers first."""
    groups = defaultdict(list)
    for r in records:
        groups[(r["model"], r["condition"])].append(r)
    rows = []
    for (model, cond), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], _cond_order(kv[0][1]))):
        n_layers = max(len(r["lift"]) for r in recs)
        for layer in [*range(n_layers), "mean"]:
            row = {"model": model, "condition": cond, "layer": layer, "questions": len(recs)}
            for m in metrics:
                mean, lo, hi, n = mean_ci(_layer_values(r, m, layer) for r in recs)
                row.update({m: _r(mean), f"{m}_lo": _r(lo), f"{m}_hi": _r(hi), f"{m}_n": n})
            rows.append(row)
    return rows


def aggregate_heads(records: list[dict]) -> list[dict]:
    """Mean lift (with and without sinks) per (model, condition, layer, head), where per-head rows were kept."""
    groups = defaultdict(list)
    for r in records:
        if "lift_heads" in r:
            groups[(r["model"], r["condition"])].append(r)
    rows = []
    for (model, cond), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], _cond_order(kv[0][1]))):
        for layer in range(len(recs[0]["lift_heads"])):
            for head in range(len(recs[0]["lift_heads"][layer])):
                row = {"model": model, "condition": cond, "layer": layer, "head": head}
                for m in ("lift", "lift_ns"):
                    mean, lo, hi, n = mean_ci(r[f"{m}_heads"][layer][head] for r in recs)
                    row.update({m: _r(mean), f"{m}_lo": _r(lo), f"{m}_hi": _r(hi), f"{m}_n": n})
                rows.append(row)
    return rows


def _cond_order(c: str):
    return (c != "plain", c)


def paired(records: list[dict], metrics=("lift", "lift_ns")) -> list[dict]:
    """Paired differences on the same questions, per layer: each cue minus plain (same model), and finetuned
    minus pretrained (same condition)."""
    by = {(r["model"], r["condition"], r["question_id"]): r for r in records}
    models = sorted({r["model"] for r in records})
    conds = sorted({r["condition"] for r in records}, key=_cond_order)
    pairs = [((m, c), (m, "plain"), "cue_vs_plain") for m in models for c in conds if c != "plain"]
    if {"pretrained", "finetuned"} <= set(models):
        pairs += [(("finetuned", c), ("pretrained", c), "finetuned_vs_pretrained") for c in conds]
    out = []
    for (ma, ca), (mb, cb), kind in pairs:
        qids = sorted({q for (m, c, q) in by if (m, c) == (ma, ca)} & {q for (m, c, q) in by if (m, c) == (mb, cb)})
        if not qids:
            continue
        n_layers = max(len(by[(ma, ca, q)]["lift"]) for q in qids)
        for layer in [*range(n_layers), "mean"]:
            row = {"comparison": kind, "a": f"{ma}/{ca}", "b": f"{mb}/{cb}", "layer": layer}
            for m in metrics:
                diffs = []
                for q in qids:
                    va, vb = _layer_values(by[(ma, ca, q)], m, layer), _layer_values(by[(mb, cb, q)], m, layer)
                    if va is not None and vb is not None:
                        diffs.append(va - vb)
                mean, lo, hi, n = mean_ci(diffs)
                row.update({f"{m}_diff": _r(mean), f"{m}_diff_lo": _r(lo), f"{m}_diff_hi": _r(hi), f"{m}_n": n})
            out.append(row)
    return out
