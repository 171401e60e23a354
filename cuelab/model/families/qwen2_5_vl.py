"""Qwen2.5-VL (Qwen/Qwen2.5-VL-3B/7B-Instruct): Qwen2_5_VLForConditionalGeneration with Qwen2_5_VLProcessor
(video processor Qwen2VLVideoProcessor).

Its video tokens are 2 frames x 28 x 28 px (14 px patches merged 2 x 2, temporal patch 2), t-major then row then
column: the vision tower runs its window attention on a permuted order and puts the merged tokens back in that
order before the model scatters them into the `<|video_pad|>` positions. The language model takes 3-D
multimodal rope positions (`get_rope_index`) whose time axis is in absolute time: temporal patch k sits at
k * tokens_per_second * second_per_grid_ts, where second_per_grid_ts (seconds per temporal patch) is what the
processor derived from the frames' fps; the scorer's positions read the same value the model's forward gets.
No deepstack. The chat template adds Qwen's default system turn when a prompt has none.
"""

from __future__ import annotations

from typing import Iterable

from cuelab.model.families.base import FrameGeometry, ModelFamily, VideoFeatures, random_from_config, unwrap

# Qwen2.5-VL's chat layout without tools: a default system turn when the first message is not a system one,
# then `<|im_start|>role\n...<|im_end|>\n` per message; generation prompt "<|im_start|>assistant\n".
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- else %}"
    "{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' or 'video' in item %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item %}"
    "{{- item['text'] }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- endif %}"
)

# Official config.json values of Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct. Their vision_config lists only
# hidden_size 1280, out_hidden_size (3B) and tokens_per_second 2: the rest are the Qwen2.5-VL vision defaults of
# the transformers release they were written with (depth 32, intermediate 3420, 16 heads, window 112 px, full
# attention in blocks 7/15/23/31, silu).
PRESETS = {
    "qwen2.5-vl-3b": dict(text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                                    num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                                    tie_word_embeddings=True)),
    "qwen2.5-vl-7b": dict(text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                    num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                    tie_word_embeddings=False)),
}
_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, patch_size=14,
               spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
               fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", initializer_range=0.02)


class Qwen2_5_VL(ModelFamily):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    processor_classes = ("Qwen2_5_VLProcessor",)
    end_token = "<|im_end|>"
    video_token = "<|video_pad|>"
    rope_axes = 3
    uses_mm_token_type_ids = True  # get_rope_index finds the video tokens by it (text 0, video 2)

    def geometry(self, processor=None) -> FrameGeometry:
        vp = getattr(processor, "video_processor", None)
        if vp is None:
            return FrameGeometry(14, 2, 2)
        return FrameGeometry(int(vp.patch_size), int(vp.merge_size), int(vp.temporal_patch_size))

    def video_kwargs(self, processor, frames, device=None) -> dict:
        kwargs = super().video_kwargs(processor, frames, device)
        if hasattr(processor.video_processor, "cap_pixels_per_frame"):  # silence its warning (frames not resized)
            kwargs["cap_pixels_per_frame"] = False
        return kwargs

    pixel_keys = ("video_grid_thw", "second_per_grid_ts")

    def video_pixels(self, inputs: dict, dtype) -> dict:
        """Pixels, grid and seconds per temporal patch: the last one is a model input (its rope time axis), kept
        in float32 whatever `dtype` (bf16 would shift the time positions it scales)."""
        import torch

        return {"pixel_values_videos": inputs["pixel_values_videos"].to(dtype),
                "video_grid_thw": inputs["video_grid_thw"].cpu(),
                "second_per_grid_ts": torch.as_tensor(inputs["second_per_grid_ts"]).reshape(-1).cpu()}

    def video_features(self, model, pixels: list[dict], device) -> list[VideoFeatures]:
        """One vision-tower call for every video; the tower returns each video's merged tokens in prompt order
        (its window permutation undone), split per video (tokens = T x H x W / merge^2)."""
        import torch

        inner = unwrap(model)
        pv = torch.cat([p["pixel_values_videos"].to(device, non_blocking=True) for p in pixels])
        grid = torch.cat([p["video_grid_thw"] for p in pixels])
        res = inner.model.get_video_features(pv, grid.to(device))
        embeds = res.pooler_output if hasattr(res, "pooler_output") else res
        sizes = (grid.prod(-1) // inner.model.visual.spatial_merge_size ** 2).tolist()
        embeds = torch.split(torch.cat(list(embeds)) if isinstance(embeds, (list, tuple)) else embeds, sizes)
        return [VideoFeatures(e, []) for e in embeds]

    def positions(self, model, ids, mm_token_type_ids, pixels):
        """3-D rope positions (3, len) on the CPU and the rope delta, with the prompt's second_per_grid_ts."""
        import torch

        inner = unwrap(model)
        if mm_token_type_ids is None:
            mm_token_type_ids = (ids == self.video_token_id(model)).long() * 2
        kw = {}
        if pixels is not None:
            kw = {"video_grid_thw": pixels["video_grid_thw"].cpu(),
                  "second_per_grid_ts": torch.as_tensor(pixels["second_per_grid_ts"]).reshape(-1).cpu()}
        pos, delta = inner.model.get_rope_index(ids[None].cpu(), mm_token_type_ids=mm_token_type_ids[None].cpu(),
                                                **kw)
        return pos[:, 0], int(delta.reshape(-1)[0])

    def speedups(self, model, training: bool = False, compile: bool = False,
                 attn_implementation: str = "sdpa") -> None:
        """The vision patch embedding (a Conv3d whose stride is its kernel) as one matmul in training (same
        weights; its Conv3d backward is slow on a CPU) and, with SDPA, the vision tower's window attention as
        one SDPA call per run of equal windows instead of one per window (cuelab.model.speed: on an H100 the
        per-window calls made the 3B's vision tower most of its scoring time, benchmarks/RESULTS.md)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (Qwen2_5_VisionPatchEmbed,
                                                                        Qwen2_5_VLVisionAttention)

        from cuelab.model.speed import batch_vision_attention, linear_patch_embed

        if training:
            linear_patch_embed(model, (Qwen2_5_VisionPatchEmbed,))
        if attn_implementation == "sdpa" or not training:
            batch_vision_attention(model, (Qwen2_5_VLVisionAttention,))

    def video_grid(self, inputs: dict, processor):
        from cuelab.model.video_tokens import VideoGrid

        g = self.geometry(processor)
        return VideoGrid.from_thw(inputs["video_grid_thw"][0], g.patch, g.merge, g.temporal_patch)

    def build_tiny(self, cfg=None, extra_texts: Iterable[str] = ()):
        """(model, processor): the real Qwen2.5-VL classes around a locally trained Qwen tokenizer, float32, eval
        mode, deterministic from cfg.seed."""
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        from cuelab.config import TinyModelConfig
        from cuelab.model.tiny import QWEN_SPECIAL_TOKENS, qwen_tokenizer, tiny_corpus, train_bpe

        cfg = cfg or TinyModelConfig()
        vocab, merges = train_bpe(tiny_corpus(extra_texts), cfg.vocab_size - len(QWEN_SPECIAL_TOKENS))
        tokenizer = qwen_tokenizer(vocab, merges)
        tokenizer.chat_template = CHAT_TEMPLATE
        processor = build_processor(tokenizer)
        config = tiny_config(cfg, tokenizer)
        torch.manual_seed(cfg.seed)
        model = Qwen2_5_VLForConditionalGeneration(config).float()
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model.eval(), processor

    def random_model(self, preset: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
        """A Qwen2.5-VL of `preset` (PRESETS) with random weights, built on `device` (GPU benchmarks)."""
        from transformers import Qwen2_5_VLForConditionalGeneration

        config = preset_config(preset)
        return random_from_config(Qwen2_5_VLForConditionalGeneration, config, dtype, device, attn_implementation, seed)


def build_processor(tokenizer):
    """The real Qwen2_5_VLProcessor classes around `tokenizer`: patch 14, merge 2, temporal patch 2, CLIP
    normalisation, the checkpoints' pixel bounds (a fallback only: sample_frames sizes the frames)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    common = dict(patch_size=14, temporal_patch_size=2, merge_size=2,
                  size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384})
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**common), tokenizer=tokenizer,
                               video_processor=Qwen2VLVideoProcessor(**common), chat_template=CHAT_TEMPLATE)


def tiny_config(cfg, tokenizer):
    """Qwen2_5_VLConfig of the tiny model (cfg: a TinyModelConfig); token ids taken from `tokenizer`. Qwen2.5-VL's
    text attention derives head_dim = hidden_size / heads, so cfg.head_dim must agree with it."""
    from transformers import Qwen2_5_VLConfig

    from cuelab.model.tiny import QWEN_SPECIAL_TOKENS

    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {cfg.vocab_size} < tokenizer size {len(tokenizer)}")
    if cfg.hidden_size != cfg.head_dim * cfg.num_attention_heads:
        raise ValueError(f"qwen2_5_vl needs hidden_size = head_dim x num_attention_heads "
                         f"({cfg.hidden_size} != {cfg.head_dim} x {cfg.num_attention_heads})")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                num_key_value_heads=cfg.num_key_value_heads, initializer_range=cfg.initializer_range,
                max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
                pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta,
                                 "mrope_section": list(cfg.mrope_section)})
    # the last vision block attends over the whole frame as the real ones' blocks 7/15/23/31 do; the others
    # attend within 112 px windows
    vision = dict(_VISION, depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size,
                  num_heads=cfg.vision_num_heads, intermediate_size=cfg.vision_intermediate_size,
                  out_hidden_size=cfg.hidden_size, fullatt_block_indexes=[cfg.vision_depth - 1],
                  initializer_range=cfg.vision_initializer_range)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                            pad_token_id=ids["<|endoftext|>"])


def preset_config(name: str):
    """Qwen2_5_VLConfig of a real Qwen2.5-VL size (random weights when instantiated; no download)."""
    from transformers import Qwen2_5_VLConfig

    if name not in PRESETS:
        raise ValueError(f"unknown qwen2_5_vl preset {name!r}; known: {', '.join(PRESETS)}")
    text = dict(hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6, initializer_range=0.02,
                bos_token_id=151643, eos_token_id=151645, sliding_window=32768, use_sliding_window=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
                **PRESETS[name]["text"])
    vision = dict(_VISION, out_hidden_size=text["hidden_size"])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"],
                            image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                            vision_end_token_id=151653)


FAMILY = Qwen2_5_VL()
