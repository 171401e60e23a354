"""report.md + report.html from a run folder: dataset and question statistics, previews, results in the first
study's two-table form with CIs, paired tests and the blind baseline, charts, per-verb accuracy, attention
curves and overlays, and the config and versions that produced them. Sections whose inputs are absent are
left out and named, never invented."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from cuelab.fsutil import atomic_write_text, load_json, read_jsonl
from cuelab.report.html import markdown_to_html
from cuelab.video.cues import CONTROLS  # cues that mark the wrong place on purpose

KIND_ORDER = ["all", "object", "verb", "referential", "referential_verb", "scene_object"]


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("cuelab", "torch", "transformers", "peft", "accelerate", "av", "opencv-python-headless", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:
        pass
    return out


def condition_order(conditions: set[str]) -> list[str]:
    """plain first, then the cues (controls last), then the blind and hint variants."""
    def key(c: str):
        return ("blind" in c, "+hint" in c, c != "plain", c.split("+")[0] in CONTROLS, c)
    return sorted(conditions, key=key)


def _num(x, fmt: str = "{:.2f}") -> str:
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else fmt.format(x)


def _fmt_pct(x) -> str:
    return "" if x is None or pd.isna(x) else f"{100 * x:.1f}"


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        import os

        return os.path.relpath(path.resolve(), base.resolve())


def _code(text) -> str:
    """Data text (an id, an error) as a Markdown code span: a name like `![x](../../secret)` stays text."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def _image(alt: str, path: Path, base: Path) -> str:
    """An image link whose target may hold any character a safe file name may (spaces, parentheses)."""
    alt = alt.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return f"![{alt}](<{rel(path, base)}>)"


# --- sections --------------------------------------------------------------------------------------------------

def _ci(acc, lo, hi) -> str:
    if acc is None or pd.isna(acc):
        return ""
    return f"{_fmt_pct(acc)} [{_fmt_pct(lo)}, {_fmt_pct(hi)}]"


def section_data(cfg, paths) -> list[str]:
    out = ["## Data and questions", ""]
    synth = paths.dataset / "synth_summary.json"
    if cfg.data.source == "synthetic" and synth.exists():
        s = load_json(synth)
        sc = s.get("config", {})
        out.append(f"Synthetic dataset: {s['videos']} videos ({sc.get('width')}x{sc.get('height')}, "
                   f"{sc.get('fps')} fps, {sc.get('min_objects')}-{sc.get('max_objects')} objects a scene), "
                   f"{s['templates']} templates, {s['object_names']} object names, seed {sc.get('seed')}.")
    else:
        out.append(f"Real data: labels `{cfg.data.labels}`, boxes `{cfg.data.annotations}`, videos "
                   f"`{cfg.data.videos}`.")
    mf = paths.questions / "manifest.json"
    if mf.exists():
        m = load_json(mf)
        per_kind = m.get("per_kind", {})
        kinds = sorted({k for split in per_kind.values() for k in split})
        rows = [[split] + [per_kind[split].get(k, 0) for k in kinds] + [sum(per_kind[split].values())]
                for split in ("train", "test") if split in per_kind]
        df = pd.DataFrame(rows, columns=["split", *kinds, "total"])
        vids = m.get("videos", {})
        out += ["", f"Questions: {vids.get('train', '?')} training and {vids.get('test', '?')} test videos "
                    f"(split by video, seeded, stratified by verb).", "", md_table(df), ""]
        share = m.get("answer_positions", {}).get("share")
        if share:
            out.append("Answer position (A-D): " + ", ".join(f"{100 * x:.1f}%" for x in share) + ".")
        sanity = m.get("sanity", {})
        if sanity:
            bad = {k: v for k, v in sanity.items() if v}
            out.append("Sanity counts (duplicate choices, answer repeated, answer in question, ...): "
                       + ("all zero." if not bad else json.dumps(bad)))
        dropped = {k: v for k, v in m.get("dropped", {}).items() if v}
        if dropped:
            out.append("Dropped: " + "; ".join(f"{k}: " + ", ".join(f"{r} {n}" for r, n in v.items())
                                               for k, v in dropped.items()) + ".")
    return out + [""]


def _preview_tracks(annotations) -> dict | Exception:
    """The annotations file read once for every preview (tolerant, as the renderer reads it), or its error."""
    from cuelab.data.something_else import load_annotations

    try:
        return load_annotations(annotations, strict=False).videos
    except Exception as e:  # a preview is decoration: each one reports it, the report goes on
        return e


def section_previews(cfg, paths, fig_dir: Path) -> list[str]:
    from cuelab.fsutil import check_video_id
    from cuelab.run_layout import conditions_needed, dataset_files
    from cuelab.video.preview import make_preview
    from cuelab.video.settings import RenderSettings

    test = paths.questions / "test.jsonl"
    if not test.exists() or not paths.videos.exists():
        return []
    _, annotations, videos = dataset_files(cfg, paths)
    vids = list(dict.fromkeys(q["video"] for q in read_jsonl(test)))[: cfg.report.previews]
    tracks = _preview_tracks(annotations) if vids else {}
    out = ["## What the model sees", "",
           "Each video is rendered once per condition through the same decode -> encode path "
           "(libx264, crf %d); a contact sheet and an animation per video:" % cfg.render.crf, ""]
    for vid in vids:
        try:  # make_preview refuses a video id that cannot name a file (see safe_name)
            if isinstance(tracks, Exception):  # the annotations did not load: each preview fails with it
                check_video_id(vid)
                raise tracks
            gif, png = make_preview(videos, tracks, vid, conditions_needed(cfg, "test"), fig_dir / "previews",
                                    settings=RenderSettings.from_config(cfg.render, cfg.seed))
        except Exception as e:  # a preview is decoration: report it, keep the report
            out += [f"(preview of video {_code(vid)} failed: {_code(e)})", ""]
            continue
        out += [_image(f"contact sheet of video {vid}", png, paths.report), "",
                _image(f"animation of video {vid}", gif, paths.report), ""]
    return out


def _accuracy_tables(results: dict, found: dict[str, str]) -> list[str]:
    """One table per model, headed by the checkpoint that produced its rows (`found`: protocols.checkpoints)."""
    from cuelab.report.protocols import checkpoint_line

    acc = pd.DataFrame(results.get("accuracy", []))
    if acc.empty:
        return ["No predictions yet."]
    out = []
    kinds = [k for k in KIND_ORDER if k in set(acc["kind"])]
    cond_order = condition_order(set(acc["condition"]))
    for model in [m for m in ("pretrained", "finetuned") if m in set(acc["model"])] + \
            sorted(set(acc["model"]) - {"pretrained", "finetuned"}):
        sub = acc[acc["model"] == model]
        rows = []
        for cond in [c for c in cond_order if c in set(sub["condition"])]:
            row = {"condition": cond}
            for k in kinds:
                r = sub[(sub["condition"] == cond) & (sub["kind"] == k)]
                row[f"{k} % [95% CI]"] = _ci(*r[["accuracy", "ci_low", "ci_high"]].iloc[0]) if len(r) else ""
            r_all = sub[(sub["condition"] == cond) & (sub["kind"] == "all")]
            row["n"] = int(r_all["n"].iloc[0]) if len(r_all) else ""
            row["failed"] = int(r_all["failed"].iloc[0]) if len(r_all) and "failed" in r_all else ""
            rows.append(row)
        out += [f"**{model.capitalize()}**", "", checkpoint_line(model, found), "", md_table(pd.DataFrame(rows)), ""]
    return out


def _paired_table(results: dict) -> list[str]:
    comp = pd.DataFrame(results.get("comparisons", []))
    if comp.empty:
        return []
    comp = comp[comp["kind"] == "all"]
    rows = []
    for _, r in comp.iterrows():
        a = f"{r['model']} {r['condition']}"
        b = f"{r['vs_model']} {r['vs_condition']}"
        ci = (f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]" if _num(r["ci_low"])
              else "(too few videos)")
        rows.append({"A": a, "B": b, "n": int(r["n"]), "A - B (points)": f"{100 * r['diff']:+.1f}",
                     "95% CI (clustered by video)": ci,
                     "only A right": int(r["only_a"]), "only B right": int(r["only_b"]),
                     "McNemar p (exact)": _num(r["mcnemar_p"], "{:.3g}"),
                     "MDE (points)": _mde(r.get("mde_clustered"), r.get("discordance"))})
    return ["### Paired comparisons (same questions)", "",
            "Each cue against plain with the same model, and the fine-tuned model against the pretrained one "
            "under the same condition. The CI of the difference is clustered by video; the p-value is "
            "McNemar's exact test on the discordant pairs. MDE: the smallest difference this comparison detects "
            "with 80% power at two-sided alpha 0.05, from its n and its discordant pairs (McNemar, Connor 1987), "
            "n taken over the design effect of clustering by video.", "", md_table(pd.DataFrame(rows)), ""]


def _mde(mde, discordance) -> str:
    if mde is not None and not pd.isna(mde):
        return f"{100 * mde:.1f}"
    return "(no discordant pair)" if discordance == 0 else "(none detectable)" if discordance else ""


def _bar_chart(results: dict, out_png: Path) -> Path | None:
    acc = pd.DataFrame(results.get("accuracy", []))
    if acc.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = [m for m in ("pretrained", "finetuned") if m in set(acc["model"])] or sorted(set(acc["model"]))
    kinds = [k for k in KIND_ORDER if k in set(acc["kind"])]
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        sub = acc[acc["model"] == model]
        conds = condition_order(set(sub["condition"]))
        width = 0.8 / max(1, len(conds))
        for i, cond in enumerate(conds):
            vals, err = [], [[], []]
            for k in kinds:
                r = sub[(sub["condition"] == cond) & (sub["kind"] == k)]
                a = float(r["accuracy"].iloc[0]) if len(r) else np.nan
                vals.append(a)
                err[0].append(a - float(r["ci_low"].iloc[0]) if len(r) else 0)
                err[1].append(float(r["ci_high"].iloc[0]) - a if len(r) else 0)
            ax.bar(np.arange(len(kinds)) + i * width - 0.4 + width / 2, vals, width, yerr=err, capsize=2,
                   label=cond)
        ax.axhline(0.25, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_title(model)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (95% CI)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _per_verb(paths) -> list[str]:
    from cuelab.evaluate.metrics import load_predictions

    test = paths.questions / "test.jsonl"
    if not paths.predictions.exists() or not test.exists():
        return []
    df = load_predictions(paths.predictions)
    if df.empty:
        return []
    verbs = {q["id"]: q.get("verb") for q in read_jsonl(test)}
    df = df[~df["failed"]].assign(verb=df["question_id"].map(verbs))
    table = df.groupby(["verb", "model", "condition"])["correct"].agg(["mean", "size"]).reset_index()
    if table.empty:  # questions that name no verb
        return []
    table["cell"] = table.apply(lambda r: f"{100 * r['mean']:.0f} ({int(r['size'])})", axis=1)
    wide = table.pivot_table(index="verb", columns=["model", "condition"], values="cell", aggfunc="first")
    wide.columns = [f"{m} {c}" for m, c in wide.columns]
    wide = wide.reset_index()
    return ["### Accuracy per verb", "", "Percent correct over all questions of videos with that verb "
            "(number of questions in brackets).", "", md_table(wide.fillna("")), ""]


def section_results(cfg, paths, fig_dir: Path) -> list[str]:
    res_path = paths.root / "results.json"
    if not res_path.exists():
        return ["## Results", "", "No evaluation results in this run (the eval stage has not run).", ""]
    results = load_json(res_path)
    out = ["## Results", "",
           f"Accuracy in percent with 95% Wilson intervals, in the first study's form: one table per model, "
           f"a row per condition. `blind` asks the same questions with no video (what text alone gives away). "
           f"The answer is constrained to the question's choices ({cfg.eval.backend} backend, rule `{cfg.eval.rule}`). "
           f"{results.get('questions', 0)} predictions, {results.get('failed', 0)} failed.", ""]
    from cuelab.report.protocols import checkpoints

    out += _accuracy_tables(results, checkpoints(cfg, paths))
    out += _paired_table(results)
    png = _bar_chart(results, fig_dir / "accuracy.png")
    if png:
        out += [f"![accuracy per kind and condition]({rel(png, paths.report)})", ""]
    out += _per_verb(paths)
    return out


def _results(paths) -> dict | None:
    res_path = paths.root / "results.json"
    return load_json(res_path) if res_path.exists() else None


def section_verdict(paths) -> list[str]:
    """The generated verdict paragraph and its table (model, cue, verdict, difference from plain, MDE)."""
    from cuelab.report.verdict import ci_text, points, verdict_label, verdict_paragraph

    results = _results(paths)
    if results is None:
        return []
    effects = results.get("effects")
    out = ["## Verdict", "", "> " + verdict_paragraph(effects), ""]
    rows = [{"model": v["model"], "cue": v["condition"], "verdict": verdict_label(v), "n": v["n"],
             "cue - plain (points) [95% CI]": f"{points(v['diff'])} {ci_text(v['ci_low'], v['ci_high'])}".strip(),
             "MDE (points)": _mde(v.get("mde"), v.get("discordance"))}
            for v in (effects or {}).get("verdicts", [])]
    if rows:
        out += [md_table(pd.DataFrame(rows)), ""]
    return out


def _follow_table(follow: list[dict]) -> list[str]:
    from cuelab.report.verdict import ci_text, points

    if not follow:
        return []
    rows = [{"model": f["model"], "kind": f["kind"], "answers": f["answers"],
             "a choice names the marked object": f["eligible"],
             "picked it % [95% CI]": f"{points(f['rate'], sign=False)} "
                                     f"{ci_text(f['ci_low'], f['ci_high'], sign=False)}".strip(),
             "picked the asked object": f["asked"], "chance %": points(f["chance"], sign=False),
             "same choice on plain %": points(f["plain_rate"], sign=False),
             "difference [95% CI]": f"{points(f['diff_vs_plain'])} {ci_text(f['diff_ci_low'], f['diff_ci_high'])}"
             .strip()} for f in follow]
    return ["### Does the model follow the cue? (wrong_object)", "",
            "Under `wrong_object` the cue sits on another object than the one asked about (the object drawn in "
            "the colour the ordinary cue gives the asked one). Follow rate: of the answers to questions where a "
            "choice names that object (and it is not the answer), the share picking it (Wilson 95% CI); beside "
            "it, how often the same choice is picked on the plain video (difference: CI clustered by video). "
            "Object and verb choices seldom name another object of the scene: their denominators are small.",
            "", md_table(pd.DataFrame(rows)), ""]


def _referential_table(referential: list[dict]) -> list[str]:
    from cuelab.report.verdict import ci_text, points

    if not referential:
        return []
    rows = [{"model": r["model"], "condition": r["condition"], "kind": r["kind"], "n": r["n"],
             "accuracy % [95% CI]": f"{points(r['accuracy'], sign=False)} "
                                    f"{ci_text(r['ci_low'], r['ci_high'], sign=False)}",
             "within-scene chance %": points(r["chance"], sign=False),
             "vs plain (points) [95% CI]": f"{points(r['diff_vs_plain'])} "
                                           f"{ci_text(r['diff_ci_low'], r['diff_ci_high'])}".strip()}
            for r in referential]
    return ["### Referential accuracy against within-scene chance", "",
            "Only a cue tells which object \"the object marked in red\" is, so on plain video a model can at best "
            "guess among the choices that name objects of the scene: the within-scene chance, the mean over the "
            "questions of 1 / (choices naming objects of the scene).", "", md_table(pd.DataFrame(rows)), ""]


def _bins_table(rows: list[dict], by: str) -> list[str]:
    from cuelab.report.verdict import ci_text, points

    if not rows:
        return []
    table = [{"model": r["model"], "cue": r["condition"], by: r["bin"], "n": r["n"],
              "plain %": points(r["plain_accuracy"], sign=False), "cued %": points(r["cued_accuracy"], sign=False),
              "cue - plain (points) [95% CI]": f"{points(r['diff'])} {ci_text(r['ci_low'], r['ci_high'])}".strip(),
              "MDE (points)": _mde(r.get("mde"), r.get("discordance"))} for r in rows]
    what = ("the asked object's mean box area as a share of the frame" if by == "object size"
            else "the annotated objects of the scene (hand excluded)")
    return [f"### Cue effect by {by}", "", f"Questions binned by {what}; paired on the questions scored in both "
            "arms, CI clustered by video (none under 5 videos).", "", md_table(pd.DataFrame(table)), ""]


def _first_study_table(checks: list[dict]) -> list[str]:
    from cuelab.report.verdict import points

    if not checks:
        return []
    rows = [{"discordance assumed": c["assumption"], "discordant %": points(c["discordance"], sign=False),
             "n": c["n"], "difference (points)": points(c["diff"], sign=False),
             "MDE (points)": points(c["mde"], sign=False), "power %": points(c["power"], sign=False),
             "detectable": "yes" if c["detectable"] else "no",
             "largest design effect it survives": _num(c.get("max_design_effect"))} for c in checks]
    return ["### Could the first study detect its difference?", "",
            "The first study's fine-tuned model: 97.29% plain vs 95.65% cued on ~2,500 questions (no paired "
            "counts published, so the share of questions only one arm got right is taken at the smallest, "
            "independent and largest values those accuracies allow). McNemar, 80% power, two-sided alpha 0.05 "
            "(Connor 1987); questions taken as independent: clustering by video divides n by its design effect.",
            "", md_table(pd.DataFrame(rows)), ""]


def section_effects(paths) -> list[str]:
    results = _results(paths)
    if results is None:
        return []
    effects = results.get("effects") or {}
    out = ["## Where cues help, and whether the model follows them", ""]
    if not effects.get("measured"):
        out += ["Not measured: results.json holds no per-question facts (the predictions were not read inside "
                "a run folder with its questions and boxes).", ""]
    out += _follow_table(effects.get("follow", []))
    out += _referential_table(effects.get("referential", []))
    out += _bins_table(effects.get("by_size", []), "object size")
    out += _bins_table(effects.get("by_objects", []), "objects in the scene")
    return out + _first_study_table(effects.get("first_study", []))


def section_attention(cfg, paths) -> list[str]:
    res = paths.attention / "attention_results.json"
    if not res.exists():
        return []
    results = load_json(res)
    rows = pd.DataFrame(results.get("rows", []))
    out = ["## Attention: does the model look inside the cue?", "",
           "Attention from the position that predicts the answer to every video token, per layer (heads "
           "averaged). *Lift* = attention mass inside the question's object box divided by the box's share of the "
           "frame (1 = no preference); *without sinks* leaves out the few tokens that draw attention regardless "
           f"of content ({results.get('settings', {}).get('sink_tokens')} tokens). "
           f"{results.get('settings', {}).get('questions')} test questions.", ""]
    if not rows.empty:
        mean = rows[rows["layer"].astype(str) == "mean"]
        table = pd.DataFrame({
            "model": mean["model"], "condition": mean["condition"], "questions": mean["questions"],
            "lift (mean over layers) [95% CI]": [
                f"{_num(r['lift'])} [{_num(r['lift_lo'])}, {_num(r['lift_hi'])}]" if _num(r["lift"]) else ""
                for _, r in mean.iterrows()],
            "lift without sinks [95% CI]": [
                f"{_num(r['lift_ns'])} [{_num(r['lift_ns_lo'])}, {_num(r['lift_ns_hi'])}]" if _num(r["lift_ns"])
                else "" for _, r in mean.iterrows()],
            "mass on cue pixels": [_num(r.get("cue_mass"), "{:.3f}") for _, r in mean.iterrows()],
        })
        out += [md_table(table), ""]
    png = paths.attention / "attention_lift.png"
    if png.exists():
        out += [f"![lift per layer]({rel(png, paths.report)})", ""]
    overlays = sorted((paths.attention / "overlays").glob("*.gif"))[:4]
    if overlays:
        out += ["Attention overlays (plain beside cued; the object's box outlined):", ""]
        out += [_image(p.stem, p, paths.report) for p in overlays] + [""]
    return out


def section_problems(paths) -> list[str]:
    out = []
    for name, path in (("render", paths.videos / "errors.jsonl"), ("attention", paths.attention / "errors.jsonl")):
        if path.exists():
            rows = list(read_jsonl(path, skip_partial=True))
            if rows:
                out.append(f"- {name}: {len(rows)} skipped (see `{rel(path, paths.root)}`), e.g. "
                           f"{_code(rows[0].get('video_id'))}: {_code(rows[0].get('reason'))}")
    return (["## Skipped inputs", ""] + out + [""]) if out else []


def section_provenance(cfg, paths) -> list[str]:
    import yaml

    from cuelab.config import jsonable

    v = versions()
    return ["## Config and versions", "",
            "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), "",
            "```yaml", yaml.safe_dump(jsonable(cfg), sort_keys=False).rstrip(), "```", ""]


def _tiny_name(cfg) -> str:
    from cuelab.model.families import DEFAULT

    return f"tiny {cfg.model.family or DEFAULT} (built locally)"


def build_report(cfg, paths, compare=None) -> tuple[Path, Path | None]:
    """Write report/report.md (+ report.html, self-contained) for the run at `paths`. `compare`: a run of the
    other protocol (protocols.load_other_run) whose results are set beside this run's."""
    from cuelab.report.protocols import section_compare, section_protocol

    paths.report.mkdir(parents=True, exist_ok=True)
    fig_dir = paths.report / "figures"
    lines = [f"# {cfg.report.title}: {cfg.name} (protocol `{cfg.protocol}`)", "",
             "Do visual cues (boxes, trajectories, ...) drawn on the frames help a video VLM answer questions "
             "about the marked object? Plain and cued versions of the same test videos, the same questions, "
             f"the model `{cfg.model.name_or_path if cfg.model.tiny is None else _tiny_name(cfg)}`"
             " before and after LoRA fine-tuning on plain + cued videos.", ""]
    lines += section_verdict(paths)  # first: the verdict the numbers write, then the results and their chart
    lines += section_results(cfg, paths, fig_dir)
    lines += section_effects(paths)
    lines += section_protocol(cfg)
    if compare is not None:
        lines += section_compare(cfg, paths, compare)
    lines += section_attention(cfg, paths)
    lines += section_data(cfg, paths)
    lines += section_previews(cfg, paths, fig_dir)
    lines += section_problems(paths)
    lines += section_provenance(cfg, paths)
    md = paths.report / "report.md"
    text = "\n".join(lines) + "\n"
    atomic_write_text(md, text)
    html = None
    if cfg.report.html:
        html = paths.report / "report.html"
        atomic_write_text(html, markdown_to_html(text, paths.report, f"{cfg.report.title}: {cfg.name}"))
    return md, html
