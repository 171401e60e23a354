"""The `lmms_eval.models` entry point (pyproject.toml): lmms-eval 0.7 calls `manifest()` while it builds its model
registry, so `--model cuelab` resolves to cuelab/export/lmms_model.py once cuelab is installed in lmms-eval's
environment. Kept apart from the model class: loading the manifest must not import torch."""

from __future__ import annotations

MODEL_ID = "cuelab"
CLASS_PATH = "cuelab.export.lmms_model.CuelabLMM"


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
