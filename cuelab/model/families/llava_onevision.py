"""LLaVA-OneVision (llava-hf/llava-onevision-qwen2-0.5b-ov-hf, -7b-ov-hf): LlavaOnevisionForConditionalGeneration
with LlavaOnevisionProcessor (LlavaOnevisionVideoProcessor for videos).

Every frame is one fixed square size (384 px on the real checkpoints) cut into 14 px SigLIP patches; the projected
patch features of each frame are pooled 2 x 2 (bilinear, to ceil(n / 2) per side: 27 x 27 -> 14 x 14 = 196
tokens), frames one after the other, row-major within a frame; after the last frame the model appends ONE
learned `image_newline` embedding. The processor writes that many `<video>` placeholders (frames x pooled cells
+ 1) and the model scatters the features into them in order. The language model is Qwen2 with 1-D positions.

The video grid maps each pooled cell to `patch * 2` = 28 px of the frame when the frame holds an even number of
patches: exact (the tiny model: 84 px = 6 x 6 patches -> 3 x 3 cells; bilinear halving is then a 2 x 2 mean). At
the real 384 px (27 patches pooled to 14) a cell covers 384 / 14 = 27.4 px, not a whole number: the grid takes
27 px cells, the nearest whole size, which drift by up to 6 px towards the far edge (an approximate mapping).
"""

from __future__ import annotations

import math
from typing import Iterable

from cuelab.model.families.base import FrameGeometry, ModelFamily, VideoFeatures, random_from_config, unwrap

# Special tokens in the real checkpoints' id order (151643 ... 151647 after Qwen2's base vocabulary).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# The chat template of the llava-hf OneVision checkpoints (transformers' convert_llava_onevision_weights_to_hf):
# images, then videos, then the text of a turn, whatever their order in the message (so `question_first` gives
# the video-first layout here, as on the real model); no default system turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

PATCH = 14
TINY_SIZE = 84  # 6 x 6 patches -> 3 x 3 pooled cells of 28 px per frame: small enough for CPU tests

# config.json values of the llava-hf OneVision checkpoints: SigLIP so400m with 26 layers (the last of the 27 is
# dropped), 384 px, patch 14, feature layer -1, strategy "full"; Qwen2-0.5B / Qwen2-7B text models (their published
# shapes). The resized vocabularies (152000, 152128) were read from secondary sources (llava-hf's interleave-0.5b
# config, a conversion script quoting 7b-ov-hf's), not from these checkpoints' own files.
PRESETS = {
    "llava-onevision-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                 num_attention_heads=14, num_key_value_heads=2, vocab_size=152000,
                                 tie_word_embeddings=True),
    "llava-onevision-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                               num_attention_heads=28, num_key_value_heads=4, vocab_size=152128,
                               tie_word_embeddings=False),
}
SIGLIP_SO400M = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                     num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=PATCH,
                     layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", vision_use_head=False)


def grid_pinpoints(size: int) -> list[list[int]]:
    """The anyres resolutions of the image processor and config (multiples of the tile size, 1..6 per side)."""
    return [[size * i, size * j] for i in range(1, 7) for j in range(1, 7)]


class LlavaOnevision(ModelFamily):
    name = "llava_onevision"
    model_types = ("llava_onevision",)
    processor_classes = ("LlavaOnevisionProcessor",)
    end_token = "<|im_end|>"
    video_token = "<video>"

    # -- frames and prompt ----------------------------------------------------------------------------------------
    def geometry(self, processor=None) -> FrameGeometry:
        """Patch 14, 2 x 2 pooling, one frame per token in time, and the video processor's fixed frame size."""
        vp = getattr(processor, "video_processor", None)
        if vp is None:
            return FrameGeometry(PATCH, 2, 1, (384, 384))
        w, h = int(vp.size["width"]), int(vp.size["height"])
        n = getattr(processor, "num_image_tokens", None)  # patches per frame: its side gives the patch size
        patch = w // math.isqrt(int(n)) if n else PATCH
        return FrameGeometry(patch, 2, 1, (w, h))

    def video_pixels(self, inputs: dict, dtype) -> dict:
        return {"pixel_values_videos": inputs["pixel_values_videos"].to(dtype)}

    # -- model pieces ---------------------------------------------------------------------------------------------
    def vision_tower(self, model):
        return unwrap(model).model.vision_tower

    def video_features(self, model, pixels: list[dict], device) -> list[VideoFeatures]:
        """The frames of every video through the tower in one call (each frame is encoded and pooled on its
        own); per video its frames' pooled tokens, then the newline embedding, as the model's forward scatters
        them (get_video_features of one video)."""
        import torch

        inner = unwrap(model).model
        videos = [p["pixel_values_videos"].to(device, non_blocking=True) for p in pixels]
        frames = torch.cat([v.flatten(0, 1) for v in videos])  # (sum of frames, C, H, W)
        pooled = inner.get_video_features(frames[None], return_dict=True).pooler_output[0, :-1]
        newline = inner.image_newline[None].to(pooled.dtype)
        per_frame = len(pooled) // len(frames)
        per_video = torch.split(pooled, [v.shape[0] * v.shape[1] * per_frame for v in videos])
        return [VideoFeatures(torch.cat([x, newline]), []) for x in per_video]

    def speedups(self, model, training: bool = False, compile: bool = False,
                 attn_implementation: str = "sdpa") -> None:
        """The 2 x 2 bilinear pooling on channels-last features (same values, bit for bit). transformers'
        apply_pooling makes the features channels-first contiguous before `interpolate`, whose CUDA kernel for that
        layout parallelises over the 14 x 14 output cells and loops over frames x channels: on an H100 one call
        over 4 videos' 256 frames took 91 ms of the 0.5B's 212 ms a video (benchmarks/RESULTS.md). And the SigLIP
        tower's residual stream row-major (contiguous_patch_embeddings)."""
        import types

        from cuelab.model.families.base import contiguous_patch_embeddings

        inner = unwrap(model).model
        contiguous_patch_embeddings(inner.vision_tower)
        if getattr(inner, "_cuelab_pooling", False):
            return
        inner.apply_pooling = types.MethodType(_pool_channels_last, inner)
        inner._cuelab_pooling = True

    def serving_layout(self, folder) -> None:
        """transformers 5.24 saves the SigLIP tower as `model.vision_tower.embeddings...`; the llava-hf checkpoints
        (and vLLM 0.32, which reads them) name it `vision_tower.vision_model.embeddings...`. transformers loads
        either name to the same weights, so the folder is rewritten to the checkpoints' names."""
        from cuelab.model.families.base import rename_saved_weights

        rename_saved_weights(folder, _llava_hf_key)

    # -- attention ------------------------------------------------------------------------------------------------
    def grid_positions(self, input_ids, model):
        """The video tokens without the newline closing each video (the last of each run of placeholders)."""
        import numpy as np

        pos = super().grid_positions(input_ids, model)
        ends = np.append(np.diff(pos) != 1, True) if len(pos) else np.zeros(0, dtype=bool)
        return pos[~ends]

    def video_grid(self, inputs: dict, processor):
        """(frames, pooled rows, pooled columns) of one prompt's video. Cells of patch x 2 px when the frame holds
        an even number of patches (exact); otherwise (384 px: 27 patches pooled to 14) a cell spans 384 / 14 =
        27.4 px and the grid takes the nearest whole size, 27 px (a 1 x 1 "patch" of that size), off by at most
        6 px at the far edge."""
        from cuelab.model.video_tokens import VideoGrid

        g = self.geometry(processor)
        _, t, _, h, w = (int(x) for x in inputs["pixel_values_videos"].shape)
        n = w // g.patch  # patches a side (frames are square: SigLIP's position table is)
        cells = math.ceil(n / 2)
        if n % 2 == 0:
            return VideoGrid(t, cells, cells, g.patch, 2, 1)
        return VideoGrid(t, cells, cells, round(w / cells), 1, 1)

    # -- models built here ----------------------------------------------------------------------------------------
    def build_tiny(self, cfg=None, extra_texts: Iterable[str] = ()):
        """(model, processor): the real classes at a small size (84 px frames), a locally trained tokenizer with
        the checkpoints' special tokens and chat template; deterministic from cfg.seed."""
        import torch
        from transformers import LlavaOnevisionForConditionalGeneration

        from cuelab.config import TinyModelConfig
        from cuelab.model.tiny import tiny_corpus, train_bpe

        cfg = cfg or TinyModelConfig()
        vocab, merges = train_bpe(tiny_corpus(extra_texts), cfg.vocab_size - len(SPECIAL_TOKENS))
        processor = build_processor(llava_tokenizer(vocab, merges), TINY_SIZE)
        config = tiny_config(cfg, processor.tokenizer, TINY_SIZE)
        torch.manual_seed(cfg.seed)
        model = LlavaOnevisionForConditionalGeneration(config).float()
        model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
        return model.eval(), processor

    def random_model(self, preset: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
        """A real OneVision size (PRESETS) with random weights, built on `device` (GPU benchmarks)."""
        from transformers import LlavaOnevisionForConditionalGeneration

        config = preset_config(preset)
        return random_from_config(LlavaOnevisionForConditionalGeneration, config, dtype, device,
                                  attn_implementation, seed)


def _llava_hf_key(key: str) -> str:
    """A saved weight name as the llava-hf checkpoints spell it (the SigLIP tower under `vision_model.`)."""
    for pre in ("model.vision_tower.", "vision_tower."):
        if key.startswith(pre) and not key.startswith(pre + "vision_model."):
            return "vision_tower.vision_model." + key[len(pre):]
    return key


def _pool_channels_last(self, image_features):
    """LlavaOnevisionModel.apply_pooling without its `.contiguous()`: the permuted view is channels-last, which
    `interpolate` keeps, so the result needs no copy back either."""
    import torch.nn.functional as F

    side = self.config.vision_config.image_size // self.config.vision_config.patch_size
    frames, _, dim = image_features.shape
    x = image_features.view(frames, side, side, dim).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=[math.ceil(side / 2), math.ceil(side / 2)], mode="bilinear")
    return x.permute(0, 2, 3, 1).reshape(frames, -1, dim)


def llava_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A `Qwen2Tokenizer` with the checkpoints' special tokens appended in their id order, eos `<|im_end|>`,
    pad `<|endoftext|>` and the OneVision chat template."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = dict(vocab)
    for tok in SPECIAL_TOKENS:  # ids in order, before eos/pad are named (naming them first would add them first)
        vocab.setdefault(tok, len(vocab))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(merges), unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer, size: int):
    """LlavaOnevisionProcessor around `tokenizer` for `size` px frames: SigLIP normalisation (mean = std = 0.5),
    bicubic resizing as a fallback only (frames come sized by sample_frames), (size / 14)^2 patches a frame."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    common = dict(size={"height": size, "width": size}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_processor = LlavaOnevisionImageProcessor(image_grid_pinpoints=grid_pinpoints(size), **common)
    video_processor = LlavaOnevisionVideoProcessor(**common)
    return LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   video_processor=video_processor, num_image_tokens=(size // PATCH) ** 2,
                                   vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE)


def _config(text: dict, vision: dict, image_token_id: int, video_token_id: int, tie: bool):
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=image_token_id,
                                video_token_index=video_token_id, vision_feature_layer=-1,
                                vision_feature_select_strategy="full", projector_hidden_act="gelu",
                                image_grid_pinpoints=grid_pinpoints(vision["image_size"]),
                                vision_aspect_ratio="anyres_max_9", tie_word_embeddings=tie)


def tiny_config(cfg, tokenizer, size: int):
    """LlavaOnevisionConfig of the tiny model (TinyModelConfig sizes; token ids from `tokenizer`)."""
    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {cfg.vocab_size} < tokenizer size {len(tokenizer)}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(model_type="qwen2", vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                head_dim=cfg.head_dim, initializer_range=cfg.initializer_range, max_position_embeddings=4096,
                rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    vision = dict(SIGLIP_SO400M, hidden_size=cfg.vision_hidden_size, intermediate_size=cfg.vision_intermediate_size,
                  num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_num_heads, image_size=size)
    return _config(text, vision, ids["<image>"], ids["<video>"], tie=False)


def preset_config(name: str):
    """LlavaOnevisionConfig of a real OneVision size (random weights when instantiated; no download)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    text = dict(model_type="qwen2", hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                initializer_range=0.02, bos_token_id=151643, eos_token_id=151645,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, **p)
    return _config(text, dict(SIGLIP_SO400M), 151646, 151647, tie=p["tie_word_embeddings"])


FAMILY = LlavaOnevision()
