"""The two protocols: `cuelab` (the tool's corrected one) and `first-study` (the first study as it was run).

`protocol: first-study` in a config sets the study's value of every switch below that the config does not set
itself; each switch can still be set alone (`--set render.fps=null` under the first-study protocol measures what
that one departure does). The `cuelab` value of a switch is its schema default. The settings are read from the
study's code (github 4g/visual_cues: annotate.py, measure.py, scripts/lora_2b.sh); ../shared/notes and
docs/first-study-frames.md give the sources line by line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

STUDY_CUE = "first_study_listpos"  # the study's drawing, annotation i on decoded frame i (its misalignment)


@dataclass(frozen=True)
class Switch:
    path: str  # dotted config field
    study: Any  # the first study's value
    why: str  # what the cuelab value corrects, briefly


SWITCHES: list[Switch] = [
    Switch("questions.builder", "first_study",
           "cuelab: one verb slot by template shape, phrase verbs, distractors from the same slot, distinct after "
           "normalising, balanced answer positions, referential questions; the study drew choices with "
           "replacement (duplicate choices) from pools whose order changed run to run"),
    Switch("questions.pool_first_ids", 10000, "cuelab takes every labelled video with boxes"),
    Switch("questions.test_videos", 1000, "the study's test set: the first 1,000 filtered videos in file order; "
           "cuelab splits by video, seeded and stratified by verb"),
    Switch("model.prompt", "first_study", "cuelab: choices one per line and an instruction that names them; the "
           "study's target ended in an extra newline after the end token"),
    Switch("render.cues", ["plain", STUDY_CUE], "cuelab renders its box and trajectory cues"),
    Switch("render.fps", 12.0, "cuelab keeps the source's frame rate"),
    Switch("render.even", "crop", "cuelab pads odd sizes, losing no pixel"),
    Switch("render.preset", "medium", "cuelab's faster preset (crf 18 either way)"),
    Switch("train.conditions", {"plain": 1.0, STUDY_CUE: 1.0}, "cuelab trains on plain + trajectory"),
    Switch("eval.conditions", ["plain", STUDY_CUE], "cuelab adds its cues and the wrong-object control"),
    Switch("attention.conditions", ["plain", STUDY_CUE], "cuelab measures its own cues"),
    Switch("frames_eval.rule", "first_study_vllm",
           "the study's vLLM server kept 64 frames of long clips but resampled short ones at 2 fps; cuelab samples "
           "every clip by one rule"),
    Switch("eval.rule", "sampled", "cuelab picks the choice of highest log-likelihood (deterministic, with "
           "scores for paired tests); the study sampled at temperature 0.1 under a choice grammar"),
]


def _get(raw: dict, path: str, default=None):
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set(raw: dict, path: str, value) -> None:
    parts = path.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if node is None:  # e.g. `pretrain: null`: a section switched off stays off
            return
    node.setdefault(parts[-1], copy.deepcopy(value))


def apply_protocol(raw: Any) -> Any:
    """A raw config dict with the study's value filled in for every switch the config leaves unset."""
    if not isinstance(raw, dict) or raw.get("protocol", "cuelab") != "first-study":
        return raw
    raw = copy.deepcopy(raw)
    for sw in SWITCHES:
        _set(raw, sw.path, sw.study)
    return raw


#: switches that size a run rather than define the protocol: kept when a config is run under another protocol
SIZES = ("questions.test_videos",)


def _drop(raw: dict, path: str) -> None:
    parts = path.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def switch_protocol(raw: dict, protocol: str) -> dict:
    """A raw config run under `protocol` instead of its own: its switch settings (but SIZES) are dropped so the
    protocol's values apply; its name and output folder get the protocol as a suffix. (`cuelab demo --protocol
    first-study`: the demo's data, model and budgets under the study's protocol.)"""
    if raw.get("protocol", "cuelab") == protocol:
        return raw
    raw = copy.deepcopy(raw)
    for sw in SWITCHES:
        if sw.path not in SIZES:
            _drop(raw, sw.path)
    raw["protocol"] = protocol
    raw["name"] = f"{raw.get('name', 'experiment')}-{protocol}"
    raw["output_dir"] = f"{raw.get('output_dir', 'runs/experiment')}-{protocol}"
    return raw


def cuelab_value(path: str):
    """A switch's cuelab value: the schema default."""
    from cuelab.config import ExperimentConfig, jsonable

    return _get(jsonable(ExperimentConfig()), path)


def protocol_rows(cfg) -> list[dict]:
    """One row per switch: its cuelab value, the study's, this run's, and whether this run follows the study."""
    from cuelab.config import jsonable

    run = jsonable(cfg)
    rows = []
    for sw in SWITCHES:
        value = _get(run, sw.path)
        study = jsonable(sw.study)
        rows.append({"switch": sw.path, "cuelab": cuelab_value(sw.path), "first_study": study, "run": value,
                     "as_study": value == study, "why": sw.why})
    return rows
