"""The verdict the numbers write: per model and cue, "helps" / "hurts" / "no detectable effect (could detect >= X
points)" / "not measured (why)", and one paragraph for the top of the report, generated from results.json's
`effects` (cuelab.evaluate.effects) and nothing else: no sentence here holds a number or a judgement that the
results do not."""

from __future__ import annotations

import math

from cuelab.evaluate.effects import HELPS, HURTS, NO_EFFECT, NOT_MEASURED, PLAIN, WRONG_OBJECT


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def points(x, sign: bool = True) -> str:
    """A share as points with one decimal (`+1.6`), empty when missing."""
    return "" if _missing(x) else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def ci_text(lo, hi, sign: bool = True) -> str:
    """`[lo, hi]` in points: signed for a difference, unsigned for a rate."""
    return "" if _missing(lo) or _missing(hi) else f"[{points(lo, sign)}, {points(hi, sign)}]"


def verdict_label(v: dict) -> str:
    """The verdict of one `effects.verdicts` row in words: the MDE says what "no detectable effect" could have
    detected (a missing MDE: no discordant pair, the arms answered alike; none at all: too few discordant
    pairs for any effect)."""
    if v["verdict"] == NOT_MEASURED:
        return f"not measured ({v.get('reason') or 'no data'})"
    if v["verdict"] in (HELPS, HURTS):
        return v["verdict"]
    if v.get("mde") is None:
        if v.get("discordance") == 0:
            return f"{NO_EFFECT} (no discordant pair: every question answered alike)"
        return f"{NO_EFFECT} (too few discordant pairs to detect any difference)"
    return f"{NO_EFFECT} (could detect >= {points(v['mde'], sign=False)} points)"


def _verdict_clause(v: dict) -> str:
    nums = f"{points(v['diff'])} points {ci_text(v['ci_low'], v['ci_high'])}".strip() if v.get("n") else ""
    control = " (control)" if v["condition"].split("+")[0] == WRONG_OBJECT else ""
    return f"{v['condition']}{control} {verdict_label(v)}" + (f", {nums}" if nums else "")


def _verdict_sentence(verdicts: list[dict]) -> str:
    models = list(dict.fromkeys(v["model"] for v in verdicts))
    parts = [f"{m}: " + "; ".join(_verdict_clause(v) for v in verdicts if v["model"] == m) for m in models]
    n = max((v["n"] for v in verdicts if v.get("n")), default=0)
    return (f"Cue against plain video on the same questions (up to {n} a comparison; 95% CI clustered by video; "
            f"an effect is called only when the CI excludes 0): " + ". ".join(parts) + ".")


def _follow_sentence(follow: list[dict]) -> str:
    rows = [f for f in follow if f["kind"] == "all"]
    if not rows:
        return ""
    parts = []
    for f in rows:
        if not f["eligible"]:
            parts.append(f"the {f['model']} model's {f['answers']} answers had no choice naming the marked object")
            continue
        base = f", against {points(f['plain_rate'], sign=False)}% for the same choice on plain video" \
            if not _missing(f.get("plain_rate")) else ""
        parts.append(f"the {f['model']} model picked the object the cue marks in {points(f['rate'], sign=False)}% "
                     f"{ci_text(f['ci_low'], f['ci_high'], sign=False)} of the {f['eligible']} answers (of {f['answers']}) "
                     f"where a choice names it (chance {points(f['chance'], sign=False)}%){base}")
    return f"Under {WRONG_OBJECT} (the cue on another object), " + "; ".join(parts) + "."


REFERENTIAL_KINDS = {"referential": "Referential questions (only the cue tells which object is meant)",
                     "referential_verb": "Referential verb questions (only the cue tells whose motion is meant)"}


def _referential_sentence(referential: list[dict]) -> str:
    """One sentence per referential kind measured: accuracy per model and condition against within-scene chance."""
    out = []
    for kind, lead in REFERENTIAL_KINDS.items():
        rows = [r for r in referential if r["kind"] == kind and r["condition"].split("+")[0] != "blind"]
        parts = []
        for m in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == m]
            plain = next((r for r in mine if r["condition"] == PLAIN), None)
            cued = ", ".join(f"{r['condition']} {points(r['accuracy'], sign=False)}%" for r in mine
                             if r["condition"] != PLAIN)
            if plain is not None:
                parts.append(f"{m} plain {points(plain['accuracy'], sign=False)}% (within-scene chance "
                             f"{points(plain['chance'], sign=False)}%)" + (f", {cued}" if cued else ""))
        if parts:
            out.append(f"{lead}: " + "; ".join(parts) + ".")
    return " ".join(out)


def _first_study_sentence(checks: list[dict]) -> str:
    ind = next((c for c in checks if c["assumption"] == "independent errors"), None)
    if ind is None or _missing(ind.get("mde")):
        return ""
    was = "was" if ind["detectable"] else "was not"
    extra = (f", but only while clustering by video inflates the variance less than "
             f"{ind['max_design_effect']:.2f}-fold") if ind["detectable"] and ind.get("max_design_effect") else ""
    return (f"The first study's {points(ind['diff'], sign=False)}-point plain-vs-cued difference on "
            f"{ind['n']:,} questions {was} detectable with 80% power (minimum detectable "
            f"{points(ind['mde'], sign=False)} points, errors assumed independent){extra}.")


def verdict_paragraph(effects: dict | None) -> str:
    """One paragraph from results.json's `effects`; a sentence whose numbers are absent is left out."""
    if not effects or not effects.get("verdicts"):
        return "**Verdict.** Not measured: no cue was evaluated beside plain video in this run."
    sentences = [_verdict_sentence(effects["verdicts"]), _follow_sentence(effects.get("follow", [])),
                 _referential_sentence(effects.get("referential", [])),
                 _first_study_sentence(effects.get("first_study", []))]
    return "**Verdict.** " + " ".join(s for s in sentences if s)
