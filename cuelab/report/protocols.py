"""The report's protocol parts: the switch table (cuelab.protocol), the checkpoint behind each model's rows, and
`cuelab report RUN --compare OTHER`: a run of the other protocol on the same model, its results set beside this
run's. The two protocols ask different questions, so nothing is paired across them: each protocol's cue effect is
its own paired comparison (results.json), and the two are shown side by side, condition matched to condition by
role (plain with plain, the study's cue with cuelab's cues)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import pandas as pd

from cuelab.errors import DataError
from cuelab.fsutil import load_json
from cuelab.report.build import _ci, _code, _num, condition_order, md_table
from cuelab.video.cues import CONTROLS

PROTOCOLS = ("first-study", "cuelab")  # left, right in the side-by-side tables
SIDE_KINDS = ("all", "object", "verb")  # the study reported object / verb / overall


def _val(value) -> str:
    """A config value as a short inline code span: strings bare, everything else in its one-line JSON form."""
    return _code(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _away_line(cfg, rows: list[dict], who: str = "This run") -> str:
    """Which switches the run sets away from its own protocol (the study's value, or cuelab's default)."""
    ref = "first_study" if cfg.protocol == "first-study" else "cuelab"
    away = [r for r in rows if r["run"] != r[ref]]
    if not away:
        return f"{who} follows the `{cfg.protocol}` protocol in every switch."
    return (f"{who} sets {len(away)} switch{'es' if len(away) > 1 else ''} away from its `{cfg.protocol}` protocol: "
            + "; ".join(f"`{r['switch']}` = {_val(r['run'])} (the protocol's: {_val(r[ref])})" for r in away) + ".")


def section_protocol(cfg) -> list[str]:
    from cuelab.protocol import protocol_rows

    rows = protocol_rows(cfg)
    table = pd.DataFrame([{"switch": f"`{r['switch']}`", "cuelab": _val(r["cuelab"]),
                           "first study": _val(r["first_study"]), "this run": _val(r["run"]),
                           "as the study": "yes" if r["as_study"] else "no"} for r in rows])
    return [f"## Protocol: `{cfg.protocol}`", "",
            "`protocol: first-study` gives every switch below the first study's value (read from its code, "
            "github 4g/visual_cues) unless the config sets it; `cuelab` is this tool's protocol (the schema "
            "defaults). Each switch can be set alone, to measure that one departure (cuelab/protocol.py says why "
            "each cuelab value differs).", "", md_table(table), "", _away_line(cfg, rows), ""]


def _short(path, root: Path) -> str:
    """A path inside the run folder relative to it; anything else (a hub name, an outside folder) as given."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def checkpoints(cfg, paths) -> dict[str, str]:
    """Model name -> the checkpoint the pipeline's eval stage scored under that name (cuelab.pipeline): the
    pretrained rows are the fine-tuned rows' own base model. Empty when no eval stage ran in the folder (its
    predictions came from `cuelab eval`, which may have been given any model)."""
    from cuelab.run_layout import base_model_path, finetuned_model

    if not (paths.stages / "eval.json").exists():
        return {}
    base = base_model_path(cfg, paths)
    path, adapter = finetuned_model(cfg, paths)
    tiny = ""
    if cfg.model.tiny is not None:
        tiny = " (the tiny Qwen3-VL built in this run" + (", after its pretraining)" if cfg.pretrain else ")")
    finetuned = (f"{_code(_short(base, paths.root))} with the LoRA adapter {_code(_short(adapter, paths.root))}"
                 if adapter else _code(_short(path, paths.root)))
    return {"pretrained": _code(_short(base, paths.root)) + tiny, "finetuned": finetuned}


def checkpoint_text(model: str, found: dict[str, str]) -> str:
    return found.get(model, "not recorded (no eval stage in this run folder scored it: these predictions were "
                            "written by `cuelab eval`)")


def checkpoint_line(model: str, found: dict[str, str]) -> str:
    return f"Checkpoint: {checkpoint_text(model, found)}."


# --- --compare ---------------------------------------------------------------------------------------------------

@dataclass
class OtherRun:
    root: Path
    cfg: object  # ExperimentConfig
    results: dict | None  # its results.json; None when it has none


def load_other_run(other: Path, cfg) -> OtherRun:
    """The run `--compare` names: a DataError naming its config unless it is a run of the other protocol on the
    same model (a difference between the two would otherwise not be the protocol's)."""
    from cuelab.config import jsonable, load_config

    other = Path(other)
    cfg_file = other / "config.yaml"
    ocfg = load_config(cfg_file, [f"output_dir={other}"])
    if ocfg.protocol == cfg.protocol:
        raise DataError(f"protocol is {ocfg.protocol!r}, as this run's: --compare needs a run of the other protocol",
                        file=str(cfg_file), field="protocol")
    for field in ("name_or_path", "tiny"):
        mine, theirs = jsonable(getattr(cfg.model, field)), jsonable(getattr(ocfg.model, field))
        if mine != theirs:
            raise DataError(f"{json.dumps(theirs)} differs from this run's {json.dumps(mine)}: --compare needs both "
                            "protocols measured on the same model", file=str(cfg_file), field=f"model.{field}")
    res = other / "results.json"
    return OtherRun(other, ocfg, load_json(res) if res.exists() else None)


def condition_role(condition: str) -> str:
    """What a condition is for, the same in both protocols: the study's cue and cuelab's cues are all `cue`."""
    base, _, hint = condition.partition("+")
    role = {"plain": "plain", "blind": "blind (no video)"}.get(base) or ("control" if base in CONTROLS else "cue")
    return role + (" + hint" if hint else "")


def _matched(conds: dict[str, list[str]]) -> list[tuple[str, str | None, str | None]]:
    """(role, first-study condition, cuelab condition) rows: conditions of one role side by side, in report order."""
    roles = list(dict.fromkeys(condition_role(c) for c in condition_order({c for cs in conds.values() for c in cs})))
    rows = []
    for role in roles:
        left, right = ([c for c in condition_order(set(conds[p])) if condition_role(c) == role] for p in PROTOCOLS)
        rows += [(role, a, b) for a, b in zip_longest(left, right)]
    return rows


def _acc_cell(acc: pd.DataFrame, model: str, cond: str | None, kind: str) -> str:
    r = acc[(acc["model"] == model) & (acc["condition"] == cond) & (acc["kind"] == kind)] if cond else acc[:0]
    return _ci(*r[["accuracy", "ci_low", "ci_high"]].iloc[0]) if len(r) else ""


def _n_cell(acc: pd.DataFrame, model: str, cond: str | None) -> str:
    r = acc[(acc["model"] == model) & (acc["condition"] == cond) & (acc["kind"] == "all")] if cond else acc[:0]
    return str(int(r["n"].iloc[0])) if len(r) else ""


def _diff_cells(comp: pd.DataFrame, model: str, cond: str | None) -> tuple[str, str]:
    """(cue - plain in points [95% CI clustered by video], McNemar p) of one protocol's own paired comparison."""
    if comp.empty or not cond:
        return "", ""
    r = comp[(comp["model"] == model) & (comp["vs_model"] == model) & (comp["condition"] == cond)
             & (comp["vs_condition"] == "plain") & (comp["kind"] == "all")]
    if r.empty:
        return "", ""
    r = r.iloc[0]
    ci = f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]" if _num(r["ci_low"]) else "(too few videos)"
    return f"{100 * r['diff']:+.1f} {ci}", _num(r["mcnemar_p"], "{:.3g}")


def _model_tables(model: str, acc: dict, comp: dict, conds: dict) -> list[str]:
    kinds = [k for k in SIDE_KINDS if any(k in set(a["kind"]) for a in acc.values())]
    rows, diffs = [], []
    for role, *pair in _matched(conds):
        row, drow = {"role": role}, {"role": role}
        for p, cond in zip(PROTOCOLS, pair):
            row[f"{p}: condition"] = cond or ""
            for k in kinds:
                row[f"{p}: {k} % [95% CI]"] = _acc_cell(acc[p], model, cond, k)
            row[f"{p}: n"] = _n_cell(acc[p], model, cond)
            if role != "plain":
                diff, pval = _diff_cells(comp[p], model, cond)
                drow[f"{p}: vs plain"] = f"{cond} - plain" if diff else ""
                drow[f"{p}: points [95% CI]"], drow[f"{p}: McNemar p"] = diff, pval
        rows.append(row)
        if role != "plain" and any(drow[f"{p}: vs plain"] for p in PROTOCOLS):
            diffs.append(drow)
    name = model.capitalize()
    out = [f"**{name}, both protocols: accuracy**", "", md_table(pd.DataFrame(rows)), ""]
    if diffs:
        out += [f"**{name}, both protocols: each condition against plain, on that protocol's own questions**", "",
                md_table(pd.DataFrame(diffs)), ""]
    return out


def section_compare(cfg, paths, other: OtherRun) -> list[str]:
    from cuelab.run_layout import RunPaths
    from cuelab.protocol import STUDY_CUE, protocol_rows

    out = ["## Both protocols side by side", ""]
    mine = paths.root / "results.json"
    if other.results is None or not mine.exists():
        missing = other.root if other.results is None else paths.root
        return out + [f"{_code(missing)} has no results.json (its eval stage has not run): nothing to set side "
                      "by side.", ""]
    runs = {cfg.protocol: (load_json(mine), cfg, paths, "this run"),
            other.cfg.protocol: (other.results, other.cfg, RunPaths(other.root), _code(other.root))}
    acc = {p: pd.DataFrame(runs[p][0].get("accuracy", []), columns=["model", "condition", "kind", "n", "accuracy",
                                                                     "ci_low", "ci_high"]) for p in PROTOCOLS}
    comp = {p: pd.DataFrame(runs[p][0].get("comparisons", [])) for p in PROTOCOLS}
    out += ["This run (`%s`) beside %s (`%s`), the same model. The two protocols ask different questions, so no "
            "question is paired across them: each protocol's cue effect is its own paired comparison (CI clustered "
            "by video, McNemar's exact test), and whether the cue effect depends on the protocol is read from the two "
            "intervals, not tested. Conditions are matched by role: plain with plain, the study's cue "
            "(`%s`) with cuelab's cues (`box`, `trajectory`, ...)." % (cfg.protocol, _code(other.root),
                                                                     other.cfg.protocol, STUDY_CUE), ""]
    if "referential" in set(acc["cuelab"]["kind"]):
        out += ["`all` of the cuelab protocol includes its referential questions, which the study did not ask: "
                "`object` and `verb` are the like-for-like columns.", ""]
    out += [_away_line(other.cfg, protocol_rows(other.cfg), who=f"The other run ({_code(other.root)})"), ""]
    common = set(acc[PROTOCOLS[0]]["model"]) & set(acc[PROTOCOLS[1]]["model"])
    models = [m for m in ("pretrained", "finetuned") if m in common] + sorted(common - {"pretrained", "finetuned"})
    only = sorted((set(acc[PROTOCOLS[0]]["model"]) ^ set(acc[PROTOCOLS[1]]["model"])))
    if only:
        out += ["Scored under one protocol only (not shown): " + ", ".join(_code(m) for m in only) + ".", ""]
    if not models:
        return out + ["The two runs share no scored model.", ""]
    for model in models:
        found = {p: checkpoints(runs[p][1], runs[p][2]) for p in PROTOCOLS}
        out += [f"{model.capitalize()} checkpoints: " + "; ".join(
            f"`{p}` ({runs[p][3]}): {checkpoint_text(model, found[p])}" for p in PROTOCOLS) + ".", ""]
        conds = {p: sorted(set(acc[p][acc[p]["model"] == model]["condition"])) for p in PROTOCOLS}
        out += _model_tables(model, acc, comp, conds)
    return out
