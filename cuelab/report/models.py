"""`cuelab report RUN --models OTHER [--models OTHER ...]`: one table across models x conditions and one figure
of the cue effect per model, from several run folders (each may hold another model family or checkpoint).

Nothing is recomputed: each run's accuracy (Wilson interval) and its paired comparisons against plain (points,
CI clustered by video, McNemar's exact p) are read from its own results.json (cuelab.evaluate.metrics). A
comparison is paired within one run only (the same questions, the same model): runs whose test questions differ
are still tabled side by side, and the table says they differ. Written to RUN/report/models.md (+ models.html)
and RUN/report/figures/models_cue_effect.png."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_text, load_json, read_jsonl
from cuelab.report.build import _ci, _code, _num, condition_order, md_table, rel
from cuelab.report.html import markdown_to_html

MODEL_ORDER = ("pretrained", "finetuned")
FIGURE = "models_cue_effect.png"


@dataclass
class ModelRun:
    """One run folder of the multi-model report: its config, its results.json and its test question ids."""

    root: Path
    cfg: object  # ExperimentConfig
    results: dict
    question_ids: frozenset[str] | None  # None: neither questions/test.jsonl nor predictions to read them from
    name: str = ""  # the run's label: its config name, with the folder added where two runs share a name

    @property
    def family(self) -> str:
        return model_family(self.cfg)

    @property
    def checkpoint(self) -> str:
        return "tiny" if self.cfg.model.tiny is not None else str(self.cfg.model.name_or_path)

    def models(self) -> list[str]:
        found = {r["model"] for r in self.results.get("accuracy", [])}
        return [m for m in MODEL_ORDER if m in found] + sorted(found - set(MODEL_ORDER))

    def label(self, model: str) -> str:
        return f"{self.name} · {self.family} · {self.checkpoint} · {model}"


@dataclass(frozen=True)
class Effect:
    """One point of the figure: a condition against plain for one model of one run (fractions, not points)."""

    label: str  # ModelRun.label
    condition: str
    diff: float
    ci_low: float | None  # None: too few videos for a clustered interval
    ci_high: float | None


def _checkpoint_model_type(name_or_path: str) -> str | None:
    """`model_type` of a checkpoint's config.json: a local folder, or a hub snapshot already in the local cache
    (the report never touches the network)."""
    local = Path(name_or_path) / "config.json"
    path = local if local.is_file() else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "config.json")
            path = Path(cached) if isinstance(cached, str) else None
        except Exception:  # not a hub id (a path that does not exist): the model type is unknown
            path = None
    try:
        data = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def model_family(cfg) -> str:
    """`model.family`; if null, the family of the checkpoint's config.json `model_type` (the model type itself
    when no family claims it), and the default family for a tiny model."""
    from cuelab.model.families import DEFAULT, FAMILIES

    if cfg.model.family:
        return cfg.model.family
    if cfg.model.tiny is not None:
        return DEFAULT
    mt = _checkpoint_model_type(str(cfg.model.name_or_path))
    if mt is None:
        return "unknown (no config.json found)"
    return next((f.name for f in FAMILIES.values() if mt in f.model_types), mt)


# --- loading ----------------------------------------------------------------------------------------------------

def _question_ids(root: Path) -> frozenset[str] | None:
    test = root / "questions" / "test.jsonl"
    if test.is_file():
        return frozenset(str(q["id"]) for q in read_jsonl(test))
    from cuelab.evaluate.metrics import load_predictions

    df = load_predictions(root / "predictions") if (root / "predictions").is_dir() else None
    return frozenset(df["question_id"].astype(str)) if df is not None and len(df) else None


def check_run_folder(folder: Path, results_from_predictions: bool = False) -> None:
    """A DataError naming `folder` unless it holds a run's config.yaml and results.json (or, when this command
    writes the results first, its predictions folder)."""
    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise DataError("not a run folder (no config.yaml)", file=str(folder))
    has_preds = results_from_predictions and (folder / "predictions").is_dir()
    if not (folder / "results.json").is_file() and not has_preds:
        raise DataError("no results.json in this run folder (its eval stage has not run, or `cuelab report` has "
                        "not been run on it)", file=str(folder))


def load_model_run(folder: Path) -> ModelRun:
    from cuelab.config import load_config

    folder = Path(folder)
    check_run_folder(folder)
    return _model_run(folder, load_config(folder / "config.yaml", [f"output_dir={folder}"]))


def _model_run(folder: Path, cfg) -> ModelRun:
    results = load_json(folder / "results.json")
    if not isinstance(results, dict):
        raise DataError("results.json is not a mapping", file=str(folder / "results.json"))
    return ModelRun(folder, cfg, results, _question_ids(folder), name=cfg.name)


def load_other_runs(run_dir: Path, others: list[Path]) -> list[ModelRun]:
    """The runs `--models` names, each checked (and this run's folder too) before anything is written."""
    check_run_folder(run_dir, results_from_predictions=True)
    seen = {Path(run_dir).resolve()}
    for folder in others:
        if Path(folder).resolve() in seen:
            raise DataError("run folder given twice (this run is always in the table)", file=str(folder))
        seen.add(Path(folder).resolve())
    return [load_model_run(f) for f in others]


def _name_runs(runs: list[ModelRun]) -> None:
    """Runs sharing a config name (two copies of one config) are told apart by their folder, then by position."""
    names = [r.cfg.name for r in runs]
    for run in runs:
        run.name = run.cfg.name if names.count(run.cfg.name) == 1 else f"{run.cfg.name} ({run.root.name})"
    labels = [r.name for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.name) > 1:
            run.name = f"{run.name} #{i + 1}"


# --- the table --------------------------------------------------------------------------------------------------

def question_sets(runs: list[ModelRun]) -> list[str] | None:
    """A letter per run naming its set of test questions (runs with the same ids share one); None when every
    run asks the same questions."""
    distinct = list(dict.fromkeys(r.question_ids for r in runs))
    if len(distinct) == 1 and distinct[0] is not None:
        return None
    return ["?" if r.question_ids is None else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[distinct.index(r.question_ids) % 26]
            for r in runs]


def _questions_note(runs: list[ModelRun], sets: list[str] | None) -> str:
    if sets is None:
        return f"Every run asks the same {len(runs[0].question_ids)} test questions."
    known = [r.question_ids for r in runs if r.question_ids is not None]
    common = len(frozenset.intersection(*known)) if known else 0
    sizes = "; ".join(f"{_code(r.name)}: set {s} ({'unknown' if r.question_ids is None else len(r.question_ids)}"
                      " questions)" for r, s in zip(runs, sets))
    return (f"**The runs ask different test questions** ({sizes}; {common} in common): accuracies of different "
            "sets are not comparable question for question, and every paired comparison stays within its run. "
            "The `questions` column names each row's set.")


def vs_plain(results: dict, model: str, condition: str) -> dict | None:
    """The run's own paired comparison of `condition` against plain for `model` (kind all), as results.json holds
    it (cuelab.evaluate.metrics.comparisons)."""
    return next((c for c in results.get("comparisons", []) if c["kind"] == "all" and c["model"] == model
                 and c["vs_model"] == model and c["condition"] == condition and c["vs_condition"] == "plain"), None)


def _diff_text(c: dict | None) -> str:
    if c is None:
        return ""
    ci = f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]" if _num(c["ci_low"]) else "(too few videos)"
    return f"{100 * c['diff']:+.1f} {ci}"


def table_rows(runs: list[ModelRun], sets: list[str] | None) -> list[dict]:
    """A row per run x model x condition (kind all): accuracy [Wilson CI], n, and the paired cue effect."""
    rows = []
    for i, run in enumerate(runs):
        acc = [r for r in run.results.get("accuracy", []) if r["kind"] == "all"]
        for model in run.models():
            by_cond = {r["condition"]: r for r in acc if r["model"] == model}
            for cond in condition_order(set(by_cond)):
                r, c = by_cond[cond], vs_plain(run.results, model, cond)
                row = {"run": run.name, "family": run.family, "checkpoint": run.checkpoint, "model": model,
                       "condition": cond, "n": r["n"], "accuracy % [95% CI]": _ci(r["accuracy"], r["ci_low"],
                                                                                  r["ci_high"]),
                       "vs plain: points [95% CI]": _diff_text(c),
                       "McNemar p": _num(c["mcnemar_p"], "{:.3g}") if c else ""}
                if sets is not None:
                    row["questions"] = sets[i]
                rows.append(row)
    return rows


# --- the figure -------------------------------------------------------------------------------------------------

def effects(runs: list[ModelRun]) -> list[Effect]:
    """What the figure plots: every condition but plain and the blind baseline against plain, per run x model."""
    out = []
    for run in runs:
        for model in run.models():
            conds = {c["condition"] for c in run.results.get("comparisons", [])
                     if c["model"] == c["vs_model"] == model and c["vs_condition"] == "plain"}
            for cond in condition_order({c for c in conds if c.split("+")[0] != "blind"}):
                c = vs_plain(run.results, model, cond)
                if c is not None and c["diff"] is not None:
                    out.append(Effect(run.label(model), cond, c["diff"], c["ci_low"], c["ci_high"]))
    return out


def plot_effects(points: list[Effect], out_png: Path) -> Path | None:
    """Cue effect in points (95% CI clustered by video) per model (a row each) and cue (a marker colour each)."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(p.label for p in points))
    conds = condition_order({p.condition for p in points})
    step = 0.7 / max(1, len(conds))
    width = 6 + 0.065 * max(len(label) for label in labels)  # long labels (local checkpoint paths) get room
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.22 * len(labels) * max(2, len(conds))))
    for j, cond in enumerate(conds):
        mine = [p for p in points if p.condition == cond]
        x = [100 * p.diff for p in mine]
        lo = [0.0 if p.ci_low is None else 100 * (p.diff - p.ci_low) for p in mine]
        hi = [0.0 if p.ci_high is None else 100 * (p.ci_high - p.diff) for p in mine]
        y = [labels.index(p.label) - 0.35 + step * (j + 0.5) for p in mine]
        ax.errorbar(x, y, xerr=[lo, hi], fmt="o", capsize=3, ms=5, label=cond)
    reach = max(100 * max(abs(p.diff), abs(p.ci_low or 0), abs(p.ci_high or 0)) for p in points)
    ax.set_xlim(-1.1 * max(reach, 5.0), 1.1 * max(reach, 5.0))  # centred on no effect, at least +-5 points
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("condition - plain, points (95% CI clustered by video)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# --- the document -----------------------------------------------------------------------------------------------

def section_models(runs: list[ModelRun], report_dir: Path) -> list[str]:
    """The multi-model section (table, note on the question sets, figure) for a report written in `report_dir`."""
    sets = question_sets(runs)
    out = ["## Across models", "",
           f"{len(runs)} run folders: " + ", ".join(f"{_code(r.name)} ({_code(r.root)})" for r in runs) + ". A "
           "model is named by its run, family, checkpoint and its rows in that run (`pretrained`, `finetuned`). "
           "Accuracy over all kinds in percent with 95% Wilson intervals; each condition against plain is the "
           "run's own paired comparison on the same questions (CI clustered by video, McNemar's exact test), read "
           "from its results.json.", "", _questions_note(runs, sets), ""]
    rows = table_rows(runs, sets)
    out += ["**Accuracy and cue effect per model and condition**", "",
            md_table(pd.DataFrame(rows)) if rows else "No run holds results.", ""]
    png = plot_effects(effects(runs), report_dir / "figures" / FIGURE)
    if png is not None:
        out += [f"![cue effect per model and condition, points vs plain]({rel(png, report_dir)})", ""]
    return out


def write_models_report(cfg, paths, others: list[ModelRun]) -> tuple[Path, Path | None]:
    """report/models.md (+ models.html, self-contained) of this run (its results.json as just written) beside
    `others` (load_other_runs)."""
    check_run_folder(paths.root)  # its results.json is written from its predictions before this
    runs = [_model_run(paths.root, cfg), *others]  # this run's config with the command's --set overrides
    _name_runs(runs)
    paths.report.mkdir(parents=True, exist_ok=True)
    text = "\n".join([f"# {cfg.report.title}: {cfg.name} across models", "", *section_models(runs, paths.report)])
    md = paths.report / "models.md"
    atomic_write_text(md, text + "\n")
    html = None
    if cfg.report.html:
        html = paths.report / "models.html"
        atomic_write_text(html, markdown_to_html(text, paths.report, f"{cfg.report.title}: {cfg.name} across "
                                                                     "models"))
    return md, html
