"""Model families behind one interface (cuelab.model.families.base.ModelFamily), found by name, by a model's
config (`model_type`) or by its processor's class. Adding a family is adding one module here that defines
`FAMILY` (an instance of its ModelFamily subclass): every module of this package but `base` is one, and
tests/test_families.py runs its rows for each."""

from __future__ import annotations

import importlib
import pkgutil

from cuelab.errors import DataError
from cuelab.model.families.base import FrameGeometry, ModelFamily, VideoFeatures, unwrap


def _discover() -> dict[str, ModelFamily]:
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name != "base":
            fam = importlib.import_module(f"{__name__}.{info.name}").FAMILY
            out[fam.name] = fam
    return out


FAMILIES: dict[str, ModelFamily] = _discover()
DEFAULT = "qwen3_vl"

__all__ = ["FAMILIES", "DEFAULT", "FrameGeometry", "ModelFamily", "VideoFeatures", "family_of", "frame_spec",
           "get_family", "unwrap"]


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise DataError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})", field="model.family")
    return FAMILIES[name]


def _model_type(obj) -> str | None:
    config = getattr(unwrap(obj), "config", obj)
    return getattr(config, "model_type", None) if not isinstance(config, dict) else config.get("model_type")


def family_of(obj) -> ModelFamily:
    """The family of a family name, a model (PEFT-wrapped or not), a config (object or config.json dict), a
    processor or a bare tokenizer."""
    if isinstance(obj, ModelFamily):
        return obj
    if isinstance(obj, str):
        return get_family(obj)
    cls = type(obj).__name__
    for fam in FAMILIES.values():
        if cls in fam.processor_classes:
            return fam
    mt = _model_type(obj)
    for fam in FAMILIES.values():
        if mt in fam.model_types:
            return fam
    if mt is None and hasattr(obj, "get_vocab"):
        # a bare tokenizer names no model: a family whose end-of-turn and video tokens it holds (families that
        # share a tokenizer, e.g. Qwen2.5-VL and Qwen3-VL, share these tokens, which is all a tokenizer is asked)
        vocab = obj.get_vocab()
        for fam in FAMILIES.values():
            if fam.end_token in vocab and fam.video_token in vocab:
                return fam
    raise DataError(f"no model family for {cls} (model_type {mt!r}); known families: {', '.join(FAMILIES)}",
                    field="model.family")


def frame_spec(frames_cfg, processor=None):
    """`frames_cfg` (a FramesConfig) as the FrameSpec of the frames `processor`'s model sees: its family's frame
    geometry (patch, merge, temporal patch, fixed size); without a processor, the default (Qwen3-VL's)."""
    if processor is None:
        return frames_cfg.spec()
    return frames_cfg.spec(family_of(processor).geometry(processor))
