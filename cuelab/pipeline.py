"""Runs the stages in order, each one talking to the next only through files under the run folder.

A stage is skipped when its marker `stages/<name>.json` holds the same fingerprint: a hash of the config
sections the stage reads, of the content of its input files (labels or annotations edited in place count), and
of the full fingerprints of the stages it reads, so a change upstream redoes everything downstream of it and a
killed run resumes at the unfinished stage. The marker keeps the parts, so a rerun says what changed.

A config with `models:` (several models on the same data) runs the shared stages (data, questions, render) once
in its output folder, then each model's stages in its own run folder `models/<name>/` (RunPaths: the folder links
to the shared one, so its stages read the shared dataset, questions and videos, and their fingerprints hold the
shared stages' chains: a change there makes every model's stages stale), one model after another; a model that
fails is reported (and recorded in its folder's `failed.json`) and the others go on. Last, `report/models.md`
tables every model across the conditions (cuelab.report.models). See `run_models`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape

from cuelab.config import ExperimentConfig, save_config
from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_json, load_json
from cuelab.run_layout import (SHARED_LINK, SHARED_STAGES, RunPaths, base_model_path,  # noqa: F401
                               conditions_needed, dataset_files, finetuned_model, question_videos)

console = Console(stderr=True)


# --- stages ----------------------------------------------------------------------------------------------------

def stage_data(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    if cfg.data.source == "synthetic":
        from cuelab.data.synthetic import generate

        return generate(cfg.data.synthetic, paths.dataset, workers=max(1, cfg.render.workers))
    missing = check(cfg)
    if missing:
        raise FileNotFoundError("missing inputs:\n" + "\n".join(missing))
    return {"labels": str(cfg.data.labels), "annotations": str(cfg.data.annotations), "videos": str(cfg.data.videos)}


def stage_questions(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    from cuelab.data.question_set import make_questions
    from cuelab.data.questions import write_questions
    from cuelab.data.skipped import skipped_summary

    labels, annotations, videos = dataset_files(cfg, paths)
    train, test, manifest = make_questions(cfg.questions, labels, annotations, videos)
    manifest = write_questions(paths.questions, train, test, manifest)
    for line in skipped_summary(manifest):
        console.print(line)
    return {"train": len(train), "test": len(test), "per_kind": manifest.get("per_kind")}


def stage_render(cfg: ExperimentConfig, paths: RunPaths, force: bool = False) -> dict:
    """Render each split's videos under the conditions its later stages read, nothing more."""
    from cuelab.data.something_else import load_annotations
    from cuelab.video.render import render_videos
    from cuelab.video.settings import RenderSettings

    _, annotations, videos = dataset_files(cfg, paths)
    tracks = load_annotations(annotations, strict=False).videos
    summary = {}
    for split in ("train", "test"):
        summary[split] = render_videos(videos, tracks, conditions_needed(cfg, split), paths.videos,
                                       workers=cfg.render.workers,
                                       settings=RenderSettings.from_config(cfg.render, cfg.seed),
                                       video_ids=question_videos(paths, split), force=force)
    return summary


def stage_model(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    """Tiny model: build it locally (tokenizer trained on the run's question texts). Real model: nothing to do."""
    if cfg.model.tiny is None:
        return {"model": cfg.model.name_or_path}
    from cuelab.fsutil import read_jsonl
    from cuelab.model.tiny import build_tiny_model

    texts = [q["question"] + " " + " ".join(q["choices"]) for q in read_jsonl(paths.questions / "train.jsonl")]
    out = build_tiny_model(paths.models / "tiny-init", cfg.model.tiny, extra_texts=texts, family=cfg.model.family)
    return {"model": str(out)}


def pretrain_data(cfg: ExperimentConfig, paths: RunPaths) -> list[Path]:
    """The files whose content the pretrained weights depend on beyond the config (see shipped.data_digest)."""
    return [dataset_files(cfg, paths)[0], paths.questions / "train.jsonl"]


def stage_pretrain(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    """Demo only: full training of the tiny model on plain videos, so "pretrained" means something; or the
    shipped result of exactly that (`pretrain.from_checkpoint`), taken when it was made with these settings."""
    if cfg.pretrain is None:
        return {"skipped": "no pretrain section"}
    import shutil

    from cuelab.model.train import train

    final = paths.models / "pretrained"
    if cfg.pretrain.from_checkpoint:
        from cuelab.model.shipped import resolve, take_checkpoint

        why = take_checkpoint(cfg.pretrain.from_checkpoint, cfg, final, pretrain_data(cfg, paths))
        if why is None:
            made = load_json(resolve(cfg.pretrain.from_checkpoint) / "checkpoint.json")
            console.print(f"pretrain: took the shipped model {cfg.pretrain.from_checkpoint} (made by this config's "
                          "own pretraining; `--from-scratch` / pretrain.from_checkpoint=null redoes it)")
            return {"from_checkpoint": str(cfg.pretrain.from_checkpoint), "fingerprint": made.get("fingerprint", "")}
        console.print(f"pretrain: the shipped model {cfg.pretrain.from_checkpoint} is not taken ({why}): "
                      "pretraining from scratch")

    out = paths.models / "pretrain-run"
    summary = train(cfg, paths.questions / "train.jsonl", paths.videos, out, base_model=str(paths.models / "tiny-init"),
                    resume=True, train_cfg=cfg.pretrain)
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(out / "final", final)
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}


def stage_train(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    from cuelab.model.train import train

    summary = train(cfg, paths.questions / "train.jsonl", paths.videos, paths.models / "finetune",
                    base_model=base_model_path(cfg, paths), resume=True)
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}


def stage_eval(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    from cuelab.evaluate.run import evaluate

    questions = paths.questions / "test.jsonl"
    base = base_model_path(cfg, paths)
    models = cfg.eval.models
    summary: dict = {}
    if "finetuned" in models:
        path, adapter = finetuned_model(cfg, paths)
        # with an adapter, the pretrained model is scored in the same pass (adapter off, vision features shared)
        both = adapter is not None and "pretrained" in models
        summary["finetuned"] = evaluate(cfg, path, adapter=adapter, model_name="finetuned",
                                        base_name="pretrained" if both else None, questions_path=questions,
                                        videos_root=paths.videos, out_dir=paths.root, write_results=False)
        if "pretrained" in models and not both:
            summary["pretrained"] = evaluate(cfg, base, model_name="pretrained", questions_path=questions,
                                             videos_root=paths.videos, out_dir=paths.root, write_results=False)
    elif "pretrained" in models:
        summary["pretrained"] = evaluate(cfg, base, model_name="pretrained", questions_path=questions,
                                         videos_root=paths.videos, out_dir=paths.root, write_results=False)
    from cuelab.evaluate.metrics import format_table, write_results

    results = write_results(paths.predictions, paths.root)
    console.print(format_table(results))
    return {"questions": results["questions"], "failed": results["failed"]}


def stage_attention(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    if not cfg.attention.enabled:
        return {"skipped": "attention.enabled is false"}
    from cuelab.attention.run import ModelSpec, run_attention

    _, annotations, _ = dataset_files(cfg, paths)
    specs = []
    if "pretrained" in cfg.attention.models:
        specs.append(ModelSpec("pretrained", base_model_path(cfg, paths)))
    if "finetuned" in cfg.attention.models:
        path, adapter = finetuned_model(cfg, paths)
        specs.append(ModelSpec("finetuned", path, adapter))
    results = run_attention(cfg, specs, paths.questions / "test.jsonl", paths.videos, annotations, paths.attention)
    return {"rows": len(results.get("rows", []))}


def stage_report(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    from cuelab.report.build import build_report

    md, html = build_report(cfg, paths)
    return {"report": str(md), "html": str(html) if html else None}


# --- what each stage depends on ---------------------------------------------------------------------------------

def data_inputs(cfg: ExperimentConfig, paths: RunPaths) -> dict[str, Path]:
    """Real data: the labels and annotations files, whose content counts even when they change in place."""
    if cfg.data.source == "synthetic":
        return {}
    from cuelab.data.question_set import label_files

    files = {f"data.labels.{i}": p for i, p in enumerate(label_files(cfg.data.labels))} if cfg.data.labels else {}
    return {**files, **({"data.annotations": cfg.data.annotations} if cfg.data.annotations else {})}


def question_inputs(cfg: ExperimentConfig, paths: RunPaths) -> dict[str, Path]:
    from cuelab.data.question_set import label_files

    labels, annotations, _ = dataset_files(cfg, paths)
    files = {f"labels.{i}": p for i, p in enumerate(label_files(labels))} if labels else {}
    return {**files, **({"annotations": annotations} if annotations else {})}


def model_inputs(cfg: ExperimentConfig, paths: RunPaths) -> dict[str, Path | str]:
    """A local model folder's files (names, sizes, mtimes), or the hub snapshot in the cache (its commit)."""
    if cfg.model.tiny is not None:
        return {}
    local = Path(cfg.model.name_or_path)
    if local.exists():
        return {"model.name_or_path": local}
    snap = hub_snapshot(cfg.model.name_or_path)
    return {"model.hub_snapshot": snap.name if snap else "not cached"}


def pretrain_inputs(cfg: ExperimentConfig, paths: RunPaths) -> dict[str, Path]:
    if cfg.pretrain is None or not cfg.pretrain.from_checkpoint:
        return {}
    from cuelab.model.shipped import MANIFEST, resolve

    return {"pretrain.from_checkpoint": resolve(cfg.pretrain.from_checkpoint) / MANIFEST}


def render_scope(cfg: ExperimentConfig) -> dict:
    """Which videos the render stage makes: a change reruns it (to render what is missing) but not the stages
    after it, whose own sections say which conditions they read."""
    return {split: conditions_needed(cfg, split) for split in ("train", "test")}


def no_inputs(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    return {}


def outputs_of(*names: str) -> Callable[[ExperimentConfig, RunPaths], list[Path]]:
    """A stage's resumable outputs, relative to the run folder: cleared when made under another fingerprint."""
    def outputs(cfg: ExperimentConfig, paths: RunPaths) -> list[Path]:
        if names == ("dataset",) and cfg.data.source != "synthetic":
            return []  # real data is the user's, never the run's to delete
        return [paths.root / n for n in names]
    return outputs


@dataclass(frozen=True)
class Stage:
    """A pipeline stage. Its fingerprint (see `fingerprint_parts`) covers `sections` (the config it reads), the
    content of its `inputs` files, and the fingerprints of the stages it `reads`, in full: a change anywhere
    upstream reaches every stage after it. `scope` names config that decides how much the stage does without
    changing what it has already made (render's condition list): it reruns the stage, not its dependants."""

    name: str
    sections: tuple[str, ...]
    run: Callable[[ExperimentConfig, RunPaths], dict]
    reads: tuple[str, ...] = ()
    inputs: Callable[[ExperimentConfig, RunPaths], dict] = no_inputs
    scope: Callable[[ExperimentConfig], dict] | None = None
    outputs: Callable[[ExperimentConfig, RunPaths], list[Path]] = outputs_of()


STAGES: list[Stage] = [
    Stage("data", ("data",), stage_data, inputs=data_inputs, outputs=outputs_of("dataset")),
    Stage("questions", ("questions",), stage_questions, ("data",), question_inputs, outputs=outputs_of("questions")),
    # render keeps its outputs: each video carries its own provenance and is redone when that differs
    Stage("render", ("render.crf", "render.include_hand", "render.fps", "render.even", "render.preset", "seed"),
          stage_render, ("data", "questions"), scope=render_scope),
    Stage("model", ("model",), stage_model, ("questions",), model_inputs, outputs=outputs_of("models/tiny-init")),
    Stage("pretrain", ("pretrain", "frames_train"), stage_pretrain, ("model", "render", "questions"),
          pretrain_inputs, outputs=outputs_of("models/pretrain-run", "models/pretrained")),
    Stage("train", ("train", "frames_train"), stage_train, ("pretrain", "model", "render", "questions"),
          outputs=outputs_of("models/finetune")),
    Stage("eval", ("eval", "frames_eval"), stage_eval, ("train", "pretrain", "model", "render", "questions"),
          outputs=outputs_of("predictions", "results.json", "results.csv")),
    Stage("attention", ("attention", "frames_eval"), stage_attention,
          ("train", "pretrain", "model", "render", "questions", "data"), outputs=outputs_of("attention")),
    Stage("report", ("report",), stage_report, ("eval", "attention", "render", "questions", "data"),
          outputs=outputs_of("report")),
]


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def fingerprint_parts(stage: Stage, cfg: ExperimentConfig, paths: RunPaths, upstream: dict[str, str]) -> dict:
    """What a stage's fingerprint is made of, kept in its marker so a rerun can say what changed."""
    from cuelab.digest import file_digest, json_digest

    parts = {"sections": cfg.stage_hash(*stage.sections),
             "inputs": {k: (file_digest(v) if isinstance(v, Path) else str(v))
                        for k, v in stage.inputs(cfg, paths).items()},
             "upstream": {name: upstream[name] for name in stage.reads}}
    chain = json_digest(parts)  # what dependants see
    parts["chain"] = chain
    parts["scope"] = json_digest(stage.scope(cfg)) if stage.scope else ""
    parts["fingerprint"] = json_digest([chain, parts["scope"]])
    return parts


def fingerprints(cfg: ExperimentConfig, paths: RunPaths | None = None) -> dict[str, str]:
    """Every stage's full fingerprint with the input files as they are now."""
    return {name: parts["fingerprint"] for name, parts in all_parts(cfg, paths).items()}


def all_parts(cfg: ExperimentConfig, paths: RunPaths | None = None,
              stages: list[Stage] | None = None) -> dict[str, dict]:
    """Every stage's fingerprint parts (of `stages`, the first stages of the pipeline, when given)."""
    paths = paths or RunPaths(Path(cfg.output_dir))
    stages = STAGES if stages is None else stages  # looked up now: tests swap a stage in STAGES
    chains: dict[str, str] = {}
    out = {}
    for stage in stages:
        out[stage.name] = fingerprint_parts(stage, cfg, paths, chains)
        chains[stage.name] = out[stage.name]["chain"]
    return out


def why_stale(stage: Stage, old: dict | None, new: dict) -> str:
    """A short reason a stage reruns, from its marker's parts and the new ones."""
    if old is None:
        return "not run yet"
    old_parts = old.get("parts") or {}
    if not old_parts:
        return "made by an older cuelab (no fingerprint parts)"
    reasons = []
    if old_parts.get("sections") != new["sections"]:
        reasons.append("config " + ", ".join(stage.sections) + " changed")
    for k, v in new["inputs"].items():
        if old_parts.get("inputs", {}).get(k) != v:
            reasons.append(f"input {k} changed")
    for k, v in new["upstream"].items():
        if old_parts.get("upstream", {}).get(k) != v:
            reasons.append(f"stage {k} changed")
    if old_parts.get("scope") != new["scope"]:
        reasons.append("its scope (what it makes) changed")
    return "; ".join(reasons) or "fingerprint changed"


def hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of `repo_id` when its config is cached (no network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return Path(hit).parent if isinstance(hit, str) else None


#: how many labelled videos `check` opens to prove the videos folder holds readable videos
CHECK_VIDEOS = 3
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


def check(cfg: ExperimentConfig) -> list[str]:
    """Every input the config needs that is missing or not in its format (files, folders, model weights), named;
    reads the label and annotation files in full and opens a few videos; downloads nothing."""
    problems = []
    if cfg.data.source == "ssv2":
        problems += check_data(cfg)
    # with `models:`, the top-level model is only the base of the entries: each entry's model is checked
    for where, model in ([(f"models.{i}.", e.model) for i, e in enumerate(cfg.models)] if cfg.models
                         else [("", cfg.model)]):
        if model.tiny is None:
            problems += [where + p for p in check_model(model.name_or_path, model.family)]
    return problems


def check_data(cfg: ExperimentConfig) -> list[str]:
    from cuelab.data.question_set import label_files
    from cuelab.data.something_else import load_annotations
    from cuelab.data.ssv2 import load_labels

    problems, labels, tracks = [], None, None
    given = {"labels": label_files(cfg.data.labels) if cfg.data.labels else [],
             "annotations": [cfg.data.annotations] if cfg.data.annotations else [],
             "videos": [cfg.data.videos] if cfg.data.videos else []}
    for field, paths in given.items():
        if not paths:
            problems.append(f"data.{field}: not set")
        problems += [f"data.{field}: {p} does not exist" for p in paths if not Path(p).exists()]
    for path in (p for p in given["labels"] if Path(p).exists()):
        try:
            labels = (labels or []) + load_labels(path)
        except DataError as e:
            problems.append(f"data.labels: {e}")
    try:
        if cfg.data.annotations and Path(cfg.data.annotations).exists():
            tracks = load_annotations(cfg.data.annotations, strict=False)
            if tracks.errors:
                problems.append(f"data.annotations: {len(tracks.errors)} video(s) malformed (a run skips them), "
                                f"first: {tracks.errors[0]}")
    except DataError as e:
        problems.append(f"data.annotations: {e}")
    videos = cfg.data.videos
    if videos is not None and Path(videos).exists() and not Path(videos).is_dir():
        problems.append(f"data.videos: {videos} is a file; it must be the folder of <id>.webm / <id>.mp4 / <id>/")
    elif videos is not None and labels is not None:
        problems += check_videos(Path(videos), labels, tracks.videos if tracks is not None else None)
    return problems


def check_videos(videos: Path, labels: list, tracks: dict | None) -> list[str]:
    """Open the first few labelled videos (with boxes, when boxes are known): they must be found and decode."""
    from cuelab.video.io import find_video, read_video

    ids = [e.id for e in labels if tracks is None or e.id in tracks][:CHECK_VIDEOS]
    if not ids:
        return [f"data.labels: no labelled video has boxes in data.annotations (ids do not match)"] if tracks else []
    problems = []
    for vid in ids:
        try:
            read_video(find_video(videos, vid), vid)
        except DataError as e:
            problems.append(f"data.videos: {e}")
    return problems


def check_model(name: str, family: str | None = None) -> list[str]:
    """A local folder or a cached hub snapshot with a parseable config.json (with model_type) and weights, of
    `family` when one is named."""
    local = Path(name)
    folder = local if local.exists() else hub_snapshot(name)
    if folder is None:
        return [f"model.name_or_path: weights of {name} are neither a local folder nor in the Hugging Face cache "
                f"(download them first: huggingface-cli download {name})"]
    if not folder.is_dir():
        return [f"model.name_or_path: {folder} is not a folder"]
    config = folder / "config.json"
    if not config.is_file():
        return [f"model.name_or_path: {folder} has no config.json"]
    try:
        data = load_json(config)
    except DataError as e:
        return [f"model.name_or_path: {e}"]
    if not isinstance(data, dict) or "model_type" not in data:
        return [f"model.name_or_path: {config} is not a model config (no 'model_type')"]
    if not any(any(folder.glob(p)) for p in WEIGHT_PATTERNS):
        return [f"model.name_or_path: {folder} has no weights (*.safetensors or pytorch_model*.bin)"]
    from cuelab.model.families import get_family

    if family is not None and data["model_type"] not in get_family(family).model_types:
        return [f"model.family: {family} does not match {config} (model_type {data['model_type']!r})"]
    return []


def read_marker(path: Path) -> dict | None:
    """A stage marker (`stages/<name>.json` or `<name>.started.json`), or None when there is none."""
    return load_json(path) if path.exists() else None


def clear_stale_outputs(stage: Stage, cfg: ExperimentConfig, paths: RunPaths, fingerprint: str, started: Path,
                        force: bool) -> None:
    """Remove what the stage made under another fingerprint (or under none that is known), so that resuming
    never mixes old outputs with new ones: a killed run of the same fingerprint resumes; any other rerun, or
    --force, starts clean."""
    import shutil

    made = read_marker(started) or read_marker(paths.marker(stage.name)) or {}
    made_under = made.get("fingerprint")
    if made_under == fingerprint and not force:
        return
    for out in stage.outputs(cfg, paths):
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()


def refuse_stale_upstream(cfg: ExperimentConfig, paths: RunPaths, wanted: set[str],
                          stages: list[Stage] | None = None) -> None:
    """Before anything runs: a stage left out of `wanted` that a wanted stage reads must be up to date (of
    `stages`, the first stages of the pipeline, when given: a multi-model run checks its shared ones)."""
    stages = STAGES if stages is None else stages
    parts_of = all_parts(cfg, paths, stages)
    for stage in stages:
        name, parts = stage.name, parts_of[stage.name]
        if name in wanted or not any(name in s.reads for s in STAGES if s.name in wanted):
            continue
        old = read_marker(paths.marker(name))
        if old is None or old.get("fingerprint") != parts["fingerprint"]:
            raise DataError(f"stage {name} is not up to date for this config ({why_stale(stage, old, parts)}): "
                            "add it to --stages, or run without --stages", field="stages")


def run_pipeline(cfg: ExperimentConfig, stages: list[str] | None = None, force: bool = False) -> dict:
    """Run the stages in order; one whose marker holds the same fingerprint is skipped. With `stages`, a stage
    left out must be up to date for this config (else a DataError says which and why): a subset never runs on
    stale upstream outputs."""
    if cfg.models:
        return run_models(cfg, stages, force)
    paths = RunPaths(Path(cfg.output_dir))
    wanted = wanted_stages(stages)
    if paths.shared is not None:
        wanted = model_folder_stages(paths, stages, wanted)
    refuse_stale_upstream(cfg, paths, wanted)
    paths.root.mkdir(parents=True, exist_ok=True)
    from cuelab.locks import folder_lock

    with folder_lock(paths.root, "run"):  # one `cuelab run` per run folder; the stages' own locks nest in it
        return _run_stages(cfg, paths, wanted, force)


def wanted_stages(stages: list[str] | None) -> set[str]:
    wanted = set(stages or stage_names())
    unknown = wanted - set(stage_names())
    if unknown:
        raise DataError(f"unknown stage(s) {sorted(unknown)}; stages: {stage_names()}", field="stages")
    return wanted


def model_folder_stages(paths: RunPaths, stages: list[str] | None, wanted: set[str]) -> set[str]:
    """A model folder of a multi-model run runs its model's stages only: the shared ones are the shared folder's
    (run by its config, which holds every model), here they must be up to date."""
    asked = sorted(wanted & set(SHARED_STAGES)) if stages else []
    if asked:
        raise DataError(f"stage(s) {asked} of this model folder are those of the multi-model run in {paths.shared}: "
                        f"run them with its config ({paths.shared / 'config.yaml'})", field="stages")
    return wanted - set(SHARED_STAGES)


def _run_stages(cfg: ExperimentConfig, paths: RunPaths, wanted: set[str], force: bool,
                stages: list[Stage] | None = None) -> dict:
    stages = STAGES if stages is None else stages
    save_config(cfg, paths.root / "config.yaml")
    chains: dict[str, str] = {}
    done = {}
    for stage in stages:
        marker = paths.marker(stage.name)
        old = read_marker(marker)
        parts = fingerprint_parts(stage, cfg, paths, chains)  # after the stages before it ran: their outputs count
        chains[stage.name] = parts["chain"]
        if stage.name not in wanted:
            continue
        fresh = old is not None and old.get("fingerprint") == parts["fingerprint"]
        if fresh and not force:
            console.print(f"[dim]stage {stage.name}: done earlier with the same config and inputs, skipped[/dim]")
            done[stage.name] = old
            continue
        console.rule(f"stage {stage.name}" + ("" if force else f" ({why_stale(stage, old, parts)})"))
        started = marker.with_name(f"{stage.name}.started.json")
        clear_stale_outputs(stage, cfg, paths, parts["fingerprint"], started, force)
        atomic_write_json(started, {"fingerprint": parts["fingerprint"]})
        t0 = time.time()
        result = stage.run(cfg, paths, force=True) if force and stage.name == "render" else stage.run(cfg, paths)
        record = {"fingerprint": parts["fingerprint"], "parts": parts, "seconds": round(time.time() - t0, 2),
                  "result": result}
        atomic_write_json(marker, record)
        started.unlink(missing_ok=True)
        done[stage.name] = record
    return done


# --- several models on the same data (config `models:`) -----------------------------------------------------------

#: in a model folder of a multi-model run: the stage and error of its last run, when that failed
FAILED = "failed.json"


@dataclass
class ModelOutcome:
    """How one model of a multi-model run went: its stages' records, or the stage that failed and why."""

    name: str
    folder: Path
    stages: dict
    failed_stage: str | None = None
    error: str | None = None


def run_models(cfg: ExperimentConfig, stages: list[str] | None = None, force: bool = False) -> dict:
    """A config with `models:`: the shared stages (data, questions, render) in `output_dir`, then every model's
    stages in `output_dir/models/<name>/` (ExperimentConfig.for_model), one model after another; a model that
    fails is reported and recorded (`failed.json`), and the others go on. With `stages`, each model runs those of
    its stages (a shared stage left out must be up to date, as for one run). Last, when the report stage is
    wanted, the cross-model report in `output_dir/report/` (write_models_overview). Resumable at every level:
    a stage done with the same fingerprint is skipped, for the shared stages and in each model folder."""
    from cuelab.locks import folder_lock

    paths = RunPaths(Path(cfg.output_dir))
    wanted = wanted_stages(stages)
    shared = [s for s in STAGES if s.name in SHARED_STAGES]
    refuse_stale_upstream(cfg, paths, wanted, shared)
    paths.root.mkdir(parents=True, exist_ok=True)
    with folder_lock(paths.root, "run"):
        done = _run_stages(cfg, paths, wanted & set(SHARED_STAGES), force, shared)
        per_model = [s for s in stage_names() if s in wanted and s not in SHARED_STAGES]
        outcomes = [run_one_model(cfg, i, paths, per_model, force) for i in range(len(cfg.models))] if per_model \
            else []
        overview = write_models_overview(cfg, paths) if "report" in wanted else None
    print_outcomes(outcomes, overview)
    return {"shared": done, "models": outcomes, "overview": overview}


def run_one_model(cfg: ExperimentConfig, index: int, paths: RunPaths, stages: list[str], force: bool) -> ModelOutcome:
    """Model `index` of `cfg.models` in its own folder, linked to the shared one; any error ends this model only."""
    import traceback

    entry = cfg.models[index]
    folder = paths.model_run(entry.name)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SHARED_LINK, {"shared": os.path.relpath(paths.root, folder)})
    model = entry.model
    console.rule(f"model {index + 1}/{len(cfg.models)}: {entry.name} "
                 f"({'tiny ' + (model.family or 'qwen3_vl') if model.tiny is not None else model.name_or_path})")
    try:
        done = run_pipeline(cfg.for_model(entry, folder), stages, force)
    except Exception as e:  # noqa: BLE001 -- whatever ends one model must not end the others
        started = sorted((folder / "stages").glob("*.started.json"))
        stage = started[0].name.removesuffix(".started.json") if started else None
        error = " ".join(f"{type(e).__name__}: {e}".split())
        if not isinstance(e, (DataError, FileNotFoundError)):  # a bug or the machine: keep its traceback
            console.print(traceback.format_exc(), highlight=False, markup=False)
        atomic_write_json(folder / FAILED, {"stage": stage, "error": error})
        console.print(f"[red]model {escape(entry.name)} failed[/red]" + (f" at stage {stage}" if stage else "")
                      + f": {escape(error)}", soft_wrap=True, highlight=False)
        return ModelOutcome(entry.name, folder, {}, stage, error)
    (folder / FAILED).unlink(missing_ok=True)
    return ModelOutcome(entry.name, folder, done)


def print_outcomes(outcomes: list[ModelOutcome], overview: tuple[Path, Path | None] | None) -> None:
    for o in outcomes:
        where = f"failed at stage {o.failed_stage}" if o.failed_stage else "failed"
        console.print(f"model {escape(o.name)}: " + (f"[red]{where}[/red]: {escape(o.error)}" if o.error
                                                      else f"done -> {escape(str(o.folder))}"),
                      soft_wrap=True, highlight=False)
    if overview is not None:
        console.print(f"wrote {overview[0]}" + (f" and {overview[1]}" if overview[1] else ""))


@dataclass(frozen=True)
class ModelStatus:
    """A model folder as the cross-model report finds it: whether its results are this config's, and why not."""

    name: str
    folder: Path
    current: bool  # its eval stage is done under this config's fingerprint: its results.json is this config's
    failed: dict | None  # failed.json of its last run


def model_status(cfg: ExperimentConfig, paths: RunPaths, index: int) -> ModelStatus:
    entry = cfg.models[index]
    folder = paths.model_run(entry.name)
    if not (folder / SHARED_LINK).is_file():
        return ModelStatus(entry.name, folder, False, None)
    mine = RunPaths(folder)
    marker = read_marker(mine.marker("eval")) or {}
    current = (marker.get("fingerprint") == fingerprints(cfg.for_model(entry, folder), mine)["eval"]
               and (folder / "results.json").is_file() and (folder / "config.yaml").is_file())
    return ModelStatus(entry.name, folder, current, read_marker(folder / FAILED))


def _status_line(s: ModelStatus, paths: RunPaths) -> str:
    where = os.path.relpath(s.folder, paths.report)
    failed = s.failed and (f"failed at stage {s.failed['stage']}" if s.failed.get("stage") else "failed")
    if s.current:
        after = f" ({failed} after its evaluation: {s.failed['error']})" if failed else ""
        return f"- `{s.name}`: [{where}/report/report.md]({where}/report/report.md){after}"
    why = f"**{failed}**: {s.failed['error']}" if failed else "its eval stage has not run for this config"
    return f"- `{s.name}`: not in the table, {why}"


def write_models_overview(cfg: ExperimentConfig, paths: RunPaths) -> tuple[Path, Path | None]:
    """report/models.md (+ models.html) of a multi-model run: every model named (a failed one with its stage and
    error), then the table across models x conditions and the cue-effect figure (cuelab.report.models) of those
    whose results are this config's."""
    from cuelab.fsutil import atomic_write_text
    from cuelab.report.html import markdown_to_html
    from cuelab.report.models import load_model_run, section_models

    statuses = [model_status(cfg, paths, i) for i in range(len(cfg.models))]
    runs = [load_model_run(s.folder) for s in statuses if s.current]
    paths.report.mkdir(parents=True, exist_ok=True)
    title = f"{cfg.report.title}: {cfg.name} across models"
    lines = [f"# {title}", "", f"{len(statuses)} models on the same data, questions and rendered videos (this run's "
             "dataset/, questions/ and videos/), each run in its own folder:", "",
             *[_status_line(s, paths) for s in statuses], ""]
    lines += section_models(runs, paths.report) if runs else ["No model has results for this config yet."]
    md = paths.report / "models.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    html = None
    if cfg.report.html:
        html = paths.report / "models.html"
        atomic_write_text(html, markdown_to_html("\n".join(lines), paths.report, title))
    return md, html


def report_models(cfg: ExperimentConfig) -> tuple[Path, Path | None]:
    """`cuelab report` of a multi-model run folder: each model folder's results.json and report rewritten from its
    predictions, then the cross-model report."""
    from cuelab.evaluate.metrics import write_results
    from cuelab.report.build import build_report

    paths = RunPaths(Path(cfg.output_dir))
    for entry in cfg.models:
        mine = RunPaths(paths.model_run(entry.name))
        if (mine.root / SHARED_LINK).is_file() and mine.predictions.is_dir():
            write_results(mine.predictions, mine.root)
            build_report(cfg.for_model(entry, mine.root), mine)
    return write_models_overview(cfg, paths)
