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


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]
    run: Callable[[ExperimentConfig, RunPaths], dict]


STAGES: list[Stage] = [
    Stage("data", ("data",), stage_data),
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
