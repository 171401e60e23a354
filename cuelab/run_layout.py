"""The run folder's layout and what lies where in it, for a config: the one module the runner, the report and the
CLI all read it from (none of them imports another for it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cuelab.config import ExperimentConfig
from cuelab.errors import DataError

#: the stages that depend on no model: a multi-model run runs them once, in its own folder, for all its models
SHARED_STAGES = ("data", "questions", "render")
#: in a model folder of a multi-model run: the link to the folder whose dataset, questions and videos it reads
SHARED_LINK = "shared.json"


@dataclass(frozen=True)
class RunPaths:
    """The run folder layout (DESIGN.md): runs/<name>/{config.yaml, dataset/, questions/, videos/<condition>/,
    models/, predictions/, attention/, report/, stages/}.

    A multi-model run (config `models:`) is runs/<name>/{config.yaml, dataset/, questions/, videos/, stages/ (of
    the shared stages), models/<model>/, report/models.md}, and each models/<model>/ is a run folder of its own
    whose `shared.json` names the multi-model folder ("../.."): its dataset/questions/videos paths and the
    markers of the shared stages lie there (nothing is copied), the rest in the model folder. Any RunPaths of a
    model folder follows the link, so every command and report reads a model folder like any run folder."""

    root: Path

    @cached_property
    def shared(self) -> Path | None:
        """The multi-model run folder this model folder reads its data from, or None for a standalone run."""
        link = self.root / SHARED_LINK
        if not link.is_file():
            return None
        from cuelab.fsutil import load_json

        target = load_json(link)
        if not isinstance(target, dict) or not isinstance(target.get("shared"), str):
            raise DataError('not a link to a shared run folder (it needs {"shared": "../.."})', file=str(link))
        return Path(os.path.normpath(self.root / target["shared"]))

    @property
    def data_root(self) -> Path:
        """Where the shared stages' outputs lie: the multi-model folder for a model folder, else the run's own."""
        return self.shared if self.shared is not None else self.root

    def marker(self, stage: str) -> Path:
        """A stage's marker (stages/<stage>.json): the shared stages' in the folder that ran them."""
        return (self.data_root if stage in SHARED_STAGES else self.root) / "stages" / f"{stage}.json"

    def model_run(self, name: str) -> Path:
        """The folder of model `name` of a multi-model run."""
        return self.models / name

    @property
    def dataset(self) -> Path:
        return self.data_root / "dataset"

    @property
    def questions(self) -> Path:
        return self.data_root / "questions"

    @property
    def videos(self) -> Path:
        return self.data_root / "videos"

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
