"""Qwen3-VL (Qwen/Qwen3-VL-2B/4B/8B-Instruct): Qwen3VLForConditionalGeneration with Qwen3VLProcessor.

Its video tokens are 2 frames x 32 x 32 px (16 px patches merged 2 x 2, temporal patch 2), t-major then row then
column; the language model takes 3-D multimodal rope positions (`get_rope_index`) and, at the video tokens, the
vision tower's deepstack features added after its first layers. The tiny model and the real sizes with random
weights are built by cuelab.model.tiny; the maths-preserving speed-ups live in cuelab.model.speed.
"""

from __future__ import annotations

import inspect

from cuelab.model.families.base import FrameGeometry, ModelFamily, VideoFeatures, unwrap


class Qwen3VL(ModelFamily):
    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    processor_classes = ("Qwen3VLProcessor",)
    end_token = "<|im_end|>"
    video_token = "<|video_pad|>"
    rope_axes = 3
    uses_mm_token_type_ids = True

    def geometry(self, processor=None) -> FrameGeometry:
        vp = getattr(processor, "video_processor", None)
        if vp is None:
            return FrameGeometry(16, 2, 2)
        return FrameGeometry(int(vp.patch_size), int(vp.merge_size), int(vp.temporal_patch_size))

    def video_kwargs(self, processor, frames, device=None) -> dict:
        kwargs = super().video_kwargs(processor, frames, device)
        if hasattr(processor.video_processor, "cap_pixels_per_frame"):  # 5.x before 5.22: silence its warning
            kwargs["cap_pixels_per_frame"] = False  # (no effect: frames are not resized here)
        return kwargs

    pixel_keys = ("video_grid_thw",)

    def video_pixels(self, inputs: dict, dtype) -> dict:
        return {"pixel_values_videos": inputs["pixel_values_videos"].to(dtype),
                "video_grid_thw": inputs["video_grid_thw"].cpu()}

    def video_features(self, model, pixels: list[dict], device) -> list[VideoFeatures]:
        """One vision-tower call for every video; split back per video (tokens = T x H x W / merge^2)."""
        import torch

        inner = unwrap(model)
        pv = torch.cat([p["pixel_values_videos"].to(device, non_blocking=True) for p in pixels])
        grid = torch.cat([p["video_grid_thw"] for p in pixels])
        res = inner.model.get_video_features(pv, grid.to(device))
        embeds, deep = (res.pooler_output, res.deepstack_features) if hasattr(res, "pooler_output") else res
        sizes = (grid.prod(-1) // inner.model.visual.spatial_merge_size ** 2).tolist()

        def split(x):
            return torch.split(torch.cat(list(x)), sizes) if isinstance(x, (list, tuple)) else torch.split(x, sizes)

        embeds, deep = split(embeds), [split(d) for d in deep]
        return [VideoFeatures(embeds[k], [d[k] for d in deep]) for k in range(len(sizes))]

    def positions(self, model, ids, mm_token_type_ids, pixels):
        """3-D rope positions (3, len) on the CPU (no GPU syncs) and the rope delta."""
        inner = unwrap(model)
        kw = {"video_grid_thw": pixels["video_grid_thw"].cpu()} if pixels is not None else {}
        if "mm_token_type_ids" in inspect.signature(inner.model.get_rope_index).parameters:
            kw["mm_token_type_ids"] = mm_token_type_ids[None].cpu()
        pos, delta = inner.model.get_rope_index(ids[None].cpu(), **kw)
        return pos[:, 0], int(delta.reshape(-1)[0])

    def lm_inputs(self, vis_mask, extras) -> dict:
        return {"visual_pos_masks": vis_mask, "deepstack_visual_embeds": extras}

    def speedups(self, model, training: bool = False, compile: bool = False,
                 attn_implementation: str = "sdpa") -> None:
        """Training: the patch embedding as a matmul (its Conv3d backward was a fifth of a CPU step) and, with
        SDPA, batched vision attention. Scoring: batched vision attention and, with `compile`, the small fused
        pieces (cuelab.model.speed)."""
        from cuelab.model.speed import batch_vision_attention, compile_blocks, linear_patch_embed

        if training:
            linear_patch_embed(model)
            if attn_implementation == "sdpa":
                batch_vision_attention(model)
            return
        batch_vision_attention(model)
        if compile:
            compile_blocks(model)

    def video_grid(self, inputs: dict, processor):
        from cuelab.model.video_tokens import VideoGrid

        g = self.geometry(processor)
        return VideoGrid.from_thw(inputs["video_grid_thw"][0], g.patch, g.merge, g.temporal_patch)

    def build_tiny(self, cfg=None, extra_texts=()):
        from cuelab.model.tiny import build_tiny

        return build_tiny(cfg, extra_texts)

    def random_model(self, preset: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
        from cuelab.model.tiny import random_model

        return random_model(preset, dtype=dtype, device=device, attn_implementation=attn_implementation, seed=seed)


FAMILY = Qwen3VL()
