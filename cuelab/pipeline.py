"""Runs the stages in order, each one talking to the next only through files under the run folder.

A stage is skipped when its marker `stages/<name>.json` holds the same fingerprint: a hash of the config
sections the stage reads, chained with the fingerprint of the stage before it, so a change upstream redoes
everything downstream and a killed run resumes at the unfinished stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console

from cuelab.config import ExperimentConfig, save_config
from cuelab.fsutil import atomic_write_json, load_json

console = Console(stderr=True)


@dataclass(frozen=True)
class RunPaths:
    """The run folder layout (DESIGN.md): runs/<name>/{config.yaml, dataset/, questions/, videos/<condition>/,
    models/, predictions/, attention/, report/, stages/}."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def questions(self) -> Path:
        return self.root / "questions"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def attention(self) -> Path:
        return self.root / "attention"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def stages(self) -> Path:
        return self.root / "stages"


def dataset_files(cfg: ExperimentConfig, paths: RunPaths) -> tuple[Path, Path | None, Path]:
    """(labels, annotations, videos folder) of the run: the synthetic ones or the configured real ones."""
    if cfg.data.source == "synthetic":
        return paths.dataset / "labels.json", paths.dataset / "annotations.json", paths.dataset / "videos"
    return cfg.data.labels, cfg.data.annotations, cfg.data.videos


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
    from cuelab.data.questions import build_questions, read_inputs, write_questions

    labels, annotations, _ = dataset_files(cfg, paths)
    entries, tracks, report = read_inputs(labels, annotations)
    train, test, manifest = build_questions(entries, tracks, cfg.questions)
    manifest["inputs"] = report
    manifest = write_questions(paths.questions, train, test, manifest)
    return {"train": len(train), "test": len(test), "per_kind": manifest.get("per_kind")}


def conditions_needed(cfg: ExperimentConfig, split: str | None = None) -> list[str]:
    """The cues a later stage reads, plain first: training videos are read under the (pre)training conditions,
    test videos under the evaluation and attention ones (and `render.cues` for both)."""
    wanted = list(cfg.render.cues)
    if split in (None, "train"):
        wanted += list(cfg.train.conditions) + (list(cfg.pretrain.conditions) if cfg.pretrain is not None else [])
    if split in (None, "test"):
        wanted += list(cfg.eval.conditions) + (list(cfg.attention.conditions) if cfg.attention.enabled else [])
    return ["plain"] + [c for c in dict.fromkeys(wanted) if c != "plain"]


def question_videos(paths: RunPaths, split: str) -> list[str]:
    from cuelab.fsutil import read_jsonl

    return list(dict.fromkeys(q["video"] for q in read_jsonl(paths.questions / f"{split}.jsonl")))


def stage_render(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    """Render each split's videos under the conditions its later stages read, nothing more."""
    from cuelab.data.something_else import load_annotations
    from cuelab.video.render import render_videos

    _, annotations, videos = dataset_files(cfg, paths)
    tracks = load_annotations(annotations, strict=False).videos
    summary = {}
    for split in ("train", "test"):
        summary[split] = render_videos(videos, tracks, conditions_needed(cfg, split), paths.videos,
                                       workers=cfg.render.workers, crf=cfg.render.crf,
                                       include_hand=cfg.render.include_hand,
                                       video_ids=question_videos(paths, split))
    return summary


def base_model_path(cfg: ExperimentConfig, paths: RunPaths) -> str:
    """The model the experiment calls "pretrained": the tiny model after its pretraining, or the configured one."""
    if cfg.model.tiny is not None:
        return str(paths.models / ("pretrained" if cfg.pretrain is not None else "tiny-init"))
    return cfg.model.name_or_path


def stage_model(cfg: ExperimentConfig, paths: RunPaths) -> dict:
    """Tiny model: build it locally (tokenizer trained on the run's question texts). Real model: nothing to do."""
    if cfg.model.tiny is None:
        return {"model": cfg.model.name_or_path}
    from cuelab.fsutil import read_jsonl
    from cuelab.model.tiny import build_tiny_model

    texts = [q["question"] + " " + " ".join(q["choices"]) for q in read_jsonl(paths.questions / "train.jsonl")]
    out = build_tiny_model(paths.models / "tiny-init", cfg.model.tiny, extra_texts=texts)
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


def finetuned_model(cfg: ExperimentConfig, paths: RunPaths) -> tuple[str, str | None]:
    """(model path, adapter path or None) of the fine-tuned model written by the train stage."""
    final = paths.models / "finetune" / "final"
    if (final / "adapter_config.json").exists():
        return base_model_path(cfg, paths), str(final)
    return str(final), None


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


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]
    run: Callable[[ExperimentConfig, RunPaths], dict]


STAGES: list[Stage] = [
    Stage("data", ("data",), stage_data),
    Stage("questions", ("questions",), stage_questions),
    Stage("render", ("render", "train.conditions", "pretrain", "eval.conditions", "attention"), stage_render),
    Stage("model", ("model",), stage_model),
    Stage("pretrain", ("pretrain", "frames_train"), stage_pretrain),
    Stage("train", ("train", "frames_train"), stage_train),
    Stage("eval", ("eval", "frames_eval"), stage_eval),
    Stage("attention", ("attention", "frames_eval"), stage_attention),
    Stage("report", ("report",), stage_report),
]


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def fingerprints(cfg: ExperimentConfig) -> dict[str, str]:
    out, prev = {}, ""
    for s in STAGES:
        prev = cfg.stage_hash(*s.sections) + prev[:8]
        out[s.name] = prev[:16]
    return out


def hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of `repo_id` when its config is cached (no network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def check(cfg: ExperimentConfig) -> list[str]:
    """Every input the config needs that is not there (files, folders, model weights), named; downloads nothing."""
    missing = []
    if cfg.data.source == "ssv2":
        for field in ("labels", "annotations", "videos"):
            p = getattr(cfg.data, field)
            if p is None:
                missing.append(f"data.{field}: not set")
            elif not Path(p).exists():
                missing.append(f"data.{field}: {p} does not exist")
    if cfg.model.tiny is None:
        name = cfg.model.name_or_path
        local = Path(name)
        if local.exists():
            if not (local / "config.json").exists():
                missing.append(f"model.name_or_path: {name} has no config.json")
        else:
            if hub_snapshot(name) is None:
                missing.append(f"model.name_or_path: weights of {name} are neither a local folder nor in the "
                               "Hugging Face cache (download them first: huggingface-cli download " + name + ")")
    return missing


def run_pipeline(cfg: ExperimentConfig, stages: list[str] | None = None, force: bool = False) -> dict:
    paths = RunPaths(Path(cfg.output_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths.root / "config.yaml")
    wanted = set(stages or stage_names())
    unknown = wanted - set(stage_names())
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages: {stage_names()}")
    fps = fingerprints(cfg)
    done = {}
    for stage in STAGES:
        if stage.name not in wanted:
            continue
        marker = paths.stages / f"{stage.name}.json"
        if not force and marker.exists() and load_json(marker).get("fingerprint") == fps[stage.name]:
            console.print(f"[dim]stage {stage.name}: done earlier with the same config, skipped[/dim]")
            done[stage.name] = load_json(marker)
            continue
        console.rule(f"stage {stage.name}")
        t0 = time.time()
        result = stage.run(cfg, paths)
        record = {"fingerprint": fps[stage.name], "seconds": round(time.time() - t0, 2), "result": result}
        atomic_write_json(marker, record)
        done[stage.name] = record
    return done
