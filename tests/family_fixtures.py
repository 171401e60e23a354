"""What the model-family tests share: the questions, the frames every family test samples, the tiny model of each
family (built once and saved once per test session, whichever test file asks first) and each family's facts
(one FamilyCase row per family; a new family adds its row here)."""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest

from cuelab.model.families import get_family
from cuelab.model.families.base import ModelFamily
from cuelab.model.tiny import small_test_config
from cuelab.video.io import FrameSpec, SampledFrames, Video, sample_frames

QUESTIONS = [
    {"id": "q1", "video": "v1", "kind": "verb", "question": "_____ the red cube from left to right.",
     "choices": ["Pushing", "Lifting up", "Lifting", "Covering the blue ball"], "answer": "Pushing",
     "answer_index": 0, "hint": "The red box marks the cube."},
    {"id": "q2", "video": "v1", "kind": "object", "question": "What is the object in the red box?",
     "choices": ["red cube", "blue ball", "green cone", "yellow star"], "answer": "red cube", "answer_index": 0,
     "hint": "The red box marks the answer."},
]


@dataclass(frozen=True)
class FamilyCase:
    """A family's facts, as the tests assert them (the tiny model of small_test_config unless said)."""

    model_class: str
    processor_class: str
    video_processor_class: str
    video_token: str
    geometry: tuple  # (patch, merge, temporal_patch, size) of FrameGeometry
    input_keys: frozenset  # a video prompt's processor outputs
    grid_thw: tuple[int, int, int]  # the video grid of the 8-frame 64x96 test clip
    outside_grid: int = 0  # video placeholders after the grid that are no cell (LLaVA-OneVision's newline)
    tokenizer_names_family: bool = True  # False: another family's tokens are the same (Qwen2.5-VL's for Qwen3-VL)
    demo_image_size: object = None  # vision_config.image_size of the demo-size tiny model (fixed-size families)


_QWEN_INPUTS = {"input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids"}
CASES: dict[str, FamilyCase] = {
    "internvl": FamilyCase(
        "InternVLForConditionalGeneration", "InternVLProcessor", "InternVLVideoProcessor", "<IMG_CONTEXT>",
        (14, 2, 1, (112, 112)), frozenset({"input_ids", "attention_mask", "pixel_values"}), (8, 4, 4),
        demo_image_size=(112, 112)),
    "llava_onevision": FamilyCase(
        "LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", "LlavaOnevisionVideoProcessor",
        "<video>", (14, 2, 1, (84, 84)), frozenset({"input_ids", "attention_mask", "pixel_values_videos"}),
        (8, 3, 3), outside_grid=1, demo_image_size=84),  # 6 x 6 patches pooled to 3 x 3 per frame
    "qwen2_5_vl": FamilyCase(
        "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor", "<|video_pad|>",
        (14, 2, 2, None), frozenset(_QWEN_INPUTS | {"second_per_grid_ts"}), (4, 2, 3)),  # 64x96 -> 56x84
    "qwen3_vl": FamilyCase(
        "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "Qwen3VLVideoProcessor", "<|video_pad|>",
        (16, 2, 2, None), frozenset(_QWEN_INPUTS), (4, 2, 3), tokenizer_names_family=False),
    "smolvlm": FamilyCase(
        "SmolVLMForConditionalGeneration", "SmolVLMProcessor", "SmolVLMVideoProcessor", "<image>",
        (32, 1, 1, (64, 64)), frozenset({"input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"}),
        (8, 2, 2), demo_image_size=64),
}


def sample(fam: ModelFamily, processor, seed: int = 0, h: int = 64, w: int = 96, n: int = 8, fps: float = 4.0,
           fixed_size: bool = True) -> SampledFrames:
    """Frames of a random 2 s clip sampled with the family's FrameSpec (its fixed size unless `fixed_size` is
    False), as the runners sample them; video id f"v{seed}"."""
    g = fam.geometry(processor)
    rng = np.random.default_rng(seed)
    video = Video(rng.integers(0, 255, (24, h, w, 3), dtype=np.uint8), 12.0, "v.mp4")
    spec = FrameSpec(fps=fps, min_frames=2, max_frames=n, total_pixels=None, max_pixels_per_frame=h * w,
                     factor=g.factor, temporal_patch=g.temporal_patch, size=g.size if fixed_size else None)
    return sample_frames(video, spec, video_id=f"v{seed}")


def max_diff(fast, ref) -> float:
    return float(np.max(np.abs(np.array(fast.scores) - np.array(ref.scores))))


class Tiny:
    """One family's tiny model (small_test_config) in memory, and the folder cuelab.model.tiny.build_tiny_model
    saved (a second build: the same weights), reloaded through the Auto classes on first use. Tests never change
    `model` in place (they copy it first)."""

    def __init__(self, name: str, root: Path):
        from cuelab.model.tiny import build_tiny_model

        self.fam = get_family(name)
        self.case = CASES[name]
        model, self.processor = self.fam.build_tiny(small_test_config())
        self.model = model.eval()
        self.folder = build_tiny_model(root / name, small_test_config(), family=name)
        self._frames: dict = {}
        self._reference: dict = {}

    def frames(self, **kw) -> SampledFrames:
        """sample(self.fam, self.processor, **kw), sampled once (the same object for the same arguments)."""
        bound = inspect.signature(sample).bind(self.fam, self.processor, **kw)
        bound.apply_defaults()
        key = tuple(bound.arguments.items())[2:]  # t.frames(fps=4.0) is t.frames()
        if key not in self._frames:
            self._frames[key] = sample(self.fam, self.processor, **kw)
        return self._frames[key]

    def reference(self, question: dict, frames: SampledFrames | None, spec=None):
        """reference_scores (one full forward per choice) of `model`, computed once per question, frames (from
        `frames`) and prompt spec: the rows that compare with the same reference share it."""
        from cuelab.evaluate.hf import reference_scores
        from cuelab.model.prompt import PromptSpec

        spec = spec or PromptSpec()
        key = (question["id"], id(frames), spec)
        if key not in self._reference:
            self._reference[key] = reference_scores(self.model, self.processor, question, frames, spec=spec)
        return self._reference[key]

    @cached_property
    def reloaded(self):
        """(model, processor) of the saved folder through AutoModelForImageTextToText / AutoProcessor."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(self.folder, dtype=torch.float32).eval()
        return model, AutoProcessor.from_pretrained(self.folder)


_TINY: dict[str, Tiny] = {}
_ROOT: list[tempfile.TemporaryDirectory] = []


def tiny(name: str) -> Tiny:
    """The session's Tiny of family `name`, built on first use (shared by every test file of the session)."""
    if name not in _TINY:
        if not _ROOT:
            _ROOT.append(tempfile.TemporaryDirectory(prefix="cuelab-tiny-families-"))
        _TINY[name] = Tiny(name, Path(_ROOT[0].name))
    return _TINY[name]


def family_params(names=None, skip=()) -> list:
    """pytest params of the family names (every discovered family by default), those in `skip` left out."""
    from cuelab.model.families import FAMILIES

    return [pytest.param(n, id=n) for n in sorted(names or FAMILIES) if n not in skip]
