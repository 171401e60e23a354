"""The questions of a run, by the builder the config names: `cuelab` (cuelab.data.questions) or `first_study`
(cuelab.data.first_study_protocol, the first study's own rules). The pipeline's questions stage and
`cuelab questions` both call `make_questions`, so the two never differ."""

from __future__ import annotations

from pathlib import Path

from cuelab.config import QuestionsConfig
from cuelab.errors import DataError


def label_files(labels: Path | list[Path] | None) -> list[Path]:
    if labels is None:
        raise DataError("no labels file given", field="data.labels")
    return [Path(p) for p in (labels if isinstance(labels, list) else [labels])]


def make_questions(cfg: QuestionsConfig, labels: Path | list[Path], annotations: Path | None,
                   videos_dir: Path | None = None) -> tuple[list[dict], list[dict], dict]:
    """(train rows, test rows, manifest with an `inputs` report) for the configured builder."""
    files = label_files(labels)
    if cfg.builder == "first_study":
        from cuelab.data.first_study_protocol import build_first_study_questions, read_label_pool

        # the study bounded its pool by the first N annotation ids; without pool_first_ids every annotated id
        first = cfg.pool_first_ids if cfg.pool_first_ids is not None else 1 << 62
        pool, inputs = read_label_pool(files, annotations if cfg.require_boxes else None, first_ids=first)
        train, test, manifest = build_first_study_questions(pool, cfg.seed, cfg.test_videos)
        return train, test, {**manifest, "inputs": inputs}
    if len(files) != 1:
        raise DataError(f"the cuelab question builder reads one labels file, got {len(files)}: merge them, or use "
                        "questions.builder=first_study (which pools train + validation as the study did)",
                        field="data.labels")
    from cuelab.data.questions import build_questions, read_actions, read_inputs

    entries, tracks, inputs = read_inputs(files[0], annotations, videos_dir)
    # per-object actions (synthetic two-actor scenes only) matter only to referential_verb questions
    actions = read_actions(files[0]) if "referential_verb" in cfg.kinds else None
    train, test, manifest = build_questions(entries, tracks, cfg, actions)
    return train, test, {**manifest, "inputs": inputs}
