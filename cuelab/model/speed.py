"""Speed-ups of the Qwen3-VL forward that keep its maths: batched vision attention, patch embedding as a matmul.

With SDPA, transformers' vision encoder runs one attention call per frame pair (per `cu_seqlens` segment):
32 calls x 24 layers for a 64-frame video, each too small to fill the GPU. Every frame pair of a video has the
same patch count, so each run of equal-length segments is one (segments, heads, length, head_dim) SDPA call.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def _runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(offset, count, length) of each run of equal consecutive segment lengths."""
    out, offset, i = [], 0, 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        out.append((offset, j - i, lengths[i]))
        offset += (j - i) * lengths[i]
        i = j
    return out


def _by_length(q, k, v, lengths: list[int], scale: float):
    """Attention within segments whose equal lengths are not all consecutive (Qwen2.5-VL's windows: full
    windows and the smaller ones at a frame's edges alternate): one call per distinct length, its segments
    gathered by index and the outputs put back in place."""
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    by_len: dict[int, list[int]] = {}
    for s, n in zip(starts, lengths):
        by_len.setdefault(n, []).append(s)
    out = torch.empty_like(q)
    for n, ss in by_len.items():
        idx = (torch.tensor(ss)[:, None] + torch.arange(n)).to(q.device, non_blocking=True)  # (segments, n)
        qs, ks, vs = (t[idx].transpose(1, 2) for t in (q, k, v))  # (segments, H, n, D)
        out[idx] = F.scaled_dot_product_attention(qs, ks, vs, scale=scale).transpose(1, 2)
    return out.reshape(q.shape[0], -1)


def _batched_forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    # the same rotary maths as Qwen2.5-VL's own copy of this function
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision

    n = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(n, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)  # (n, heads, head_dim)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    runs = _runs(lengths)
    if len(runs) > len(set(lengths)):  # equal lengths scattered: gather them (fewer calls than runs)
        return self.proj(_by_length(q, k, v, lengths, self.scaling))
    outs = []
    for offset, count, length in runs:
        sl = slice(offset, offset + count * length)
        # (count*length, H, D) -> (count, H, length, D): one call for all segments of this run
        qs, ks, vs = (t[sl].reshape(count, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, scale=self.scaling)
        outs.append(o.transpose(1, 2).reshape(count * length, -1))
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return self.proj(out)


def batch_vision_attention(model, classes: tuple | None = None) -> int:
    """Swap the vision attention of a Qwen3-VL model (or a PEFT wrapper of one; or modules of `classes` of the
    same shape: Qwen2.5-VL's, whose window attention is one call per window) for the batched SDPA version;
    returns how many modules were patched. Attention weights (eager, output_attentions) are unaffected:
    only call this where none are needed (training, scoring)."""
    if classes is None:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionAttention

        classes = (Qwen3VLVisionAttention,)
    n = 0
    for module in model.modules():
        if isinstance(module, classes):
            module.forward = types.MethodType(_batched_forward, module)
            n += 1
    return n


def _linear_patch_forward(self, hidden_states):
    if type(self.proj) is not torch.nn.Conv3d:  # wrapped later (e.g. a LoRA layer): the module's own path
        return type(self).forward(self, hidden_states)
    w = self.proj.weight  # (out, C, T, P, P): a Conv3d whose stride is its kernel is one matmul on the patches
    x = hidden_states.to(w.dtype).reshape(-1, w[0].numel())
    return F.linear(x, w.reshape(w.shape[0], -1), self.proj.bias)


def linear_patch_embed(model, classes: tuple | None = None) -> int:
    """Run the vision patch embedding (Conv3d, kernel = stride = one patch) as a matmul on the flattened
    patches the processor already gives: same weights and state dict; on a CPU the Conv3d and its backward
    were a fifth of a tiny model's training step (docs/demo-research.md). Returns how many modules were patched."""
    if classes is None:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed

        classes = (Qwen3VLVisionPatchEmbed,)
    n = 0
    for module in model.modules():
        if isinstance(module, classes):
            module.forward = types.MethodType(_linear_patch_forward, module)
            n += 1
    return n


def compile_blocks(model, vision: bool = True) -> int:
    """torch.compile (dynamic shapes), in place, the pieces of a (PEFT-wrapped) Qwen3-VL whose small kernels
    fuse: each LLM layer's MLP and RMSNorms, the LLM's rotary embedding and, with `vision`, each vision block.
    Not whole decoder layers: each holds its own `layer_idx` (its cache slot), so 28 layers would be 28
    specialisations, past dynamo's recompile limit (the rest silently eager); these pieces are the same code
    and constants in every layer, so one compiled graph serves all of them. Returns the modules compiled."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    mods = _llm_pieces(base.model.language_model)
    if vision:
        mods += list(base.model.visual.blocks)
    for m in mods:
        m.compile(dynamic=True)
    return len(mods)


def _llm_pieces(lm) -> list:
    """The language model's pieces whose small kernels fuse: its rotary embedding and final norm, each layer's MLP
    and norms (q/k norms where the family has them); the same code in every layer, so one graph serves all."""
    mods = [m for m in (getattr(lm, "rotary_emb", None), getattr(lm, "norm", None)) if m is not None]
    for layer in lm.layers:
        mods += [getattr(layer, n) for n in ("mlp", "input_layernorm", "post_attention_layernorm") if hasattr(layer, n)]
        mods += [getattr(layer.self_attn, n) for n in ("q_norm", "k_norm") if hasattr(layer.self_attn, n)]
    return mods


def _block_list(tower) -> torch.nn.ModuleList | None:
    """The vision tower's list of transformer blocks: its first ModuleList (before any merger's)."""
    for m in tower.modules():
        if isinstance(m, torch.nn.ModuleList):
            return m
    return None


def compile_family_pieces(model, family) -> int:
    """compile_blocks for any family: torch.compile (dynamic shapes), in place, each LLM layer's MLP and norms,
    the LLM's rotary embedding and final norm, and each block of the vision tower (its blocks hold no cache slot,
    so one graph serves all of them). The pieces whose many small kernels fuse: the vision towers' residual
    stream, norms and GELUs are memory-bound elementwise work at 40-70k patches a call. Returns the modules
    compiled (each once)."""
    mods = _llm_pieces(family.language_model(model))
    blocks = _block_list(family.vision_tower(model))
    mods += list(blocks) if blocks is not None else []
    done = 0
    for m in mods:
        if getattr(m, "_compiled_call_impl", None) is None:
            m.compile(dynamic=True)
            done += 1
    return done
