"""The run folder's layout and what lies where in it, for a config: the one module the runner, the report and the
CLI all read it from (none of them imports another for it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cuelab.config import ExperimentConfig


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


def base_model_path(cfg: ExperimentConfig, paths: RunPaths) -> str:
    """The model the experiment calls "pretrained": the tiny model after its pretraining, or the configured one."""
    if cfg.model.tiny is not None:
        return str(paths.models / ("pretrained" if cfg.pretrain is not None else "tiny-init"))
    return cfg.model.name_or_path


def finetuned_model(cfg: ExperimentConfig, paths: RunPaths) -> tuple[str, str | None]:
    """(model path, adapter path or None) of the fine-tuned model written by the train stage."""
    final = paths.models / "finetune" / "final"
    if (final / "adapter_config.json").exists():
        return base_model_path(cfg, paths), str(final)
    return str(final), None
