"""The model-family contract: what cuelab needs to know about one kind of video VLM.

Every stage that touches a model asks its family, never the model's classes: the prompt builder (end-of-turn
and video tokens), frame sampling (patch, spatial merge, temporal patch), training (which modules are the
language model's layers: LoRA targets), choice scoring (vision features, positions, extra inputs of the language
model), attention analysis (the video-token grid) and the tiny builders (a random model of the family, built
locally). One subclass per family, in `cuelab/model/families/<name>.py`, registered in `families/__init__.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FrameGeometry:
    """How a family cuts sampled frames into tokens: `patch` px patches, `merge` x `merge` patches per language
    token, `temporal_patch` frames per token in time. Resized frame sides are multiples of `factor`."""

    patch: int = 16
    merge: int = 2
    temporal_patch: int = 2
    size: tuple[int, int] | None = None  # (width, height) of every frame, for fixed-size families

    @property
    def factor(self) -> int:
        return self.patch * self.merge


@dataclass
class VideoFeatures:
    """The vision tower's output for one video: `embeds` (n video tokens, hidden) in prompt order, and `extras`,
    tensors aligned with the same tokens that the language model reads besides (Qwen3-VL: deepstack features)."""

    embeds: Any
    extras: list

    def tail(self, start: int) -> "VideoFeatures":
        """The features of video tokens from `start` on (the part of the video after a shared prefix)."""
        return VideoFeatures(self.embeds[start:], [x[start:] for x in self.extras])


def random_from_config(model_class, config, dtype=None, device=None, attn_implementation: str = "sdpa",
                       seed: int = 0):
    """A `model_class` of `config` with random weights (seeded), built directly on `device` (real sizes for GPU
    benchmarks: no CPU copy of a few billion parameters first)."""
    import torch

    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = model_class(config)
    return model.to(dtype) if dtype is not None else model


def rename_saved_weights(folder, rename) -> int:
    """Rename the weights of a saved model folder in place (model.safetensors, or the shards its index lists):
    `rename(key) -> key`. Each file is rewritten beside itself and swapped in. Returns how many keys changed."""
    import json
    import os
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    changed = 0
    for name in files:
        sd = load_file(folder / name)
        new = {rename(k): v for k, v in sd.items()}
        changed += sum(a != b for a, b in zip(sd, new))
        tmp = folder / (name + ".tmp")
        save_file(new, tmp, metadata={"format": "pt"})
        os.replace(tmp, folder / name)
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        tmp = index.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, index)
    return changed


def unwrap(model):
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def contiguous_patch_embeddings(tower) -> bool:
    """Make the vision tower's patch embeddings come out row-major. SigLIP-style embeddings return the conv's
    output as `flatten(2).transpose(1, 2)`, a channels-first view; elementwise ops keep that layout, so the whole
    residual stream runs strided: on an H100 (LLaVA-OneVision-0.5B, 4 videos of 64 frames) 52 residual adds took
    91 ms and 54 copies before the linears 90 ms of the 754 ms call. One copy here removes both; values are the
    same. Returns whether an embeddings module was found (hooked once)."""
    for module in tower.modules():
        if type(module).__name__.endswith("VisionEmbeddings"):
            if not getattr(module, "_cuelab_contiguous", False):
                module.register_forward_hook(lambda _m, _args, out: out.contiguous())
                module._cuelab_contiguous = True
            return True
    return False


class ModelFamily(ABC):
    """One family of video VLMs. Subclasses set the class attributes and implement what their models do
    differently; the defaults here are what the transformers classes of most families share."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # config.json `model_type` values of this family
    processor_classes: ClassVar[tuple[str, ...]]  # processor class names (to find the family of a processor)
    end_token: ClassVar[str]  # ends the assistant's turn: scoring appends it to every choice
    video_token: ClassVar[str]  # the prompt placeholder each video token embedding replaces
    # regex matching the start of every module name inside the language model's decoder layers (LoRA stays there)
    lm_layer_prefix: ClassVar[str] = r"model\.language_model\.layers\.\d+\."
    rope_axes: ClassVar[int] = 1  # rows of position ids (3: multimodal rope over t, h, w)
    uses_mm_token_type_ids: ClassVar[bool] = False  # the model reads mm_token_type_ids (text 0, image 1, video 2)
    # text the chat template writes between the assistant prefix and the answer (scored choices start with it)
    answer_prefix: ClassVar[str] = ""

    # -- frames and prompt ----------------------------------------------------------------------------------------
    @abstractmethod
    def geometry(self, processor=None) -> FrameGeometry:
        """Patch, merge and temporal patch of the processor (or the family's defaults without one)."""

    def video_kwargs(self, processor, frames, device=None) -> dict:
        """Processor keyword arguments for one video of already sampled and sized frames (a SampledFrames): the
        processor must neither resample nor resize them; `device` runs its tensor steps there."""
        kwargs = {"device": str(device)} if device is not None else {}
        return {"video_metadata": [frames.video_metadata()], "do_sample_frames": False, "do_resize": False,
                **kwargs}

    def processor_outputs(self, out: dict) -> dict:
        """The processor's outputs as the model's forward takes them (drops what the model does not read)."""
        out.pop("token_type_ids", None)
        if not self.uses_mm_token_type_ids:
            out.pop("mm_token_type_ids", None)
        return out

    def video_token_id(self, model) -> int:
        return int(unwrap(model).config.video_token_id)

    # -- model pieces ---------------------------------------------------------------------------------------------
    def language_model(self, model):
        """The decoder stack (embeddings in, last hidden states out)."""
        return unwrap(model).model.language_model

    def vision_tower(self, model):
        return unwrap(model).model.visual

    @abstractmethod
    def video_pixels(self, inputs: dict, dtype) -> dict:
        """The processor outputs that carry one video's pixels (kept once per video, model-input names as keys;
        floating tensors in `dtype`)."""
        keys = [k for k in inputs if k.startswith("pixel_values")] + [k for k in self.pixel_keys if k in inputs]
        return {k: inputs[k].to(dtype) if inputs[k].is_floating_point() else inputs[k] for k in keys}

    pixel_keys: ClassVar[tuple[str, ...]] = ()  # more processor outputs that belong to the video's pixels

    @abstractmethod
    def video_features(self, model, pixels: list[dict], device) -> list[VideoFeatures]:
        """The vision tower on several videos at once (each a `video_pixels` dict), one VideoFeatures each."""

    def positions(self, model, ids, mm_token_type_ids, pixels: dict | None) -> tuple[Any, int]:
        """Position ids (rope_axes, len) of one prompt (CPU) and the delta: text after it continues at index +
        delta. `pixels`: the prompt's video_pixels (None: blind)."""
        import torch

        return torch.arange(len(ids))[None], 0

    def lm_inputs(self, vis_mask, extras) -> dict:
        """Extra keyword arguments of the language model's forward for the video tokens at `vis_mask`."""
        return {}

    def serving_layout(self, folder) -> None:
        """Rewrite a saved model folder's weight names to those the published checkpoints use (what vLLM reads),
        where transformers saves them differently; nothing by default. Called after every full save."""

    # -- training, speed, attention -------------------------------------------------------------------------------
    def speedups(self, model, training: bool = False, compile: bool = False,
                 attn_implementation: str = "sdpa") -> None:
        """Maths-preserving speed-ups of this family's forward (none by default). `compile` (eval.compile on a GPU)
        is taken only by families whose compiled scoring was measured (Qwen3-VL); the generic
        cuelab.model.speed.compile_family_pieces is there to measure the others (benchmarks/families_gpu.py
        --compile) before it is turned on for them."""

    def grid_positions(self, input_ids, model):
        """Sequence positions (numpy) of the video tokens the video grid covers, in grid order: every video token
        by default (a family whose video placeholders hold tokens outside the grid, e.g. a closing newline
        embedding, leaves those out)."""
        import numpy as np

        ids = np.asarray(input_ids).reshape(-1)
        return np.flatnonzero(ids == self.video_token_id(model))

    @abstractmethod
    def video_grid(self, inputs: dict, processor):
        """The video-token grid (cuelab.model.video_tokens.VideoGrid) of one prompt's processor inputs."""

    # -- models built here ----------------------------------------------------------------------------------------
    @abstractmethod
    def build_tiny(self, cfg=None, extra_texts=()):
        """(model, processor) of a small random model of this family, deterministic from cfg.seed."""

    @abstractmethod
    def random_model(self, preset: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
        """A real architecture size of this family with random weights (GPU benchmarks)."""
