"""Attention of one query position to chosen key positions, layer by layer, without any L x L map.

During the pass, the language model's attention function is swapped for one that (1) computes the layer's
output with SDPA, as the model would, and (2) from the same rotated queries and keys computes the eager
formula softmax(q_last k^T * scale + mask) for the last query only, in float32, keeping the columns asked
for. Memory stays O(L) per layer whatever the prompt length; the row equals what eager attention with
`output_attentions=True` returns for that position (tests/test_attention_collect.py checks it).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "cuelab_last_row"


def _last_row_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    out = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                 **kwargs)
    rec = getattr(module, "_cuelab_recorder", None)
    if rec is not None:
        # query (B, H, Q, D), key (B, Hkv, K, D); batch of one, query = the last prompt position
        k = repeat_kv(key, query.shape[1] // key.shape[1]).float()
        scores = (query[:, :, -1:, :].float() @ k.transpose(2, 3)) * scaling  # (1, H, 1, K)
        if attention_mask is not None:
            m = attention_mask[:, :, -1:, : k.shape[2]]
            scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
        probs = torch.softmax(scores, dim=-1)[0, :, 0]  # (H, K)
        rec.store(module.layer_idx, probs)
    return out


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _last_row_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def text_model(model):
    """The decoder stack of the model's family (a module with `.layers` whose entries have `.self_attn`), also
    under a PEFT wrapper."""
    from cuelab.model.families import family_of

    lm = family_of(model).language_model(model)
    layers = getattr(lm, "layers", None)
    if not (isinstance(layers, torch.nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn")):
        raise ValueError(f"{type(model).__name__} has no text decoder with self-attention layers")
    return lm


class LastRowRecorder:
    """Receives each layer's last-query attention row; keeps `columns` (heads averaged unless per_head)."""

    def __init__(self, columns: torch.Tensor, n_layers: int, per_head: bool = False):
        self.columns, self.per_head = columns, per_head
        self.rows: list[torch.Tensor | None] = [None] * n_layers
        self.mass: list[torch.Tensor | None] = [None] * n_layers

    def store(self, layer: int, probs: torch.Tensor) -> None:
        cols = probs[:, self.columns.to(probs.device)]  # (H, n)
        mass = cols.sum(-1)
        if not self.per_head:
            cols, mass = cols.mean(0), mass.mean(0)
        self.rows[layer], self.mass[layer] = cols.cpu(), mass.cpu()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [i for i, r in enumerate(self.rows) if r is None]
        if missing:
            raise RuntimeError(f"no attention was recorded for layers {missing}")
        return torch.stack(self.rows), torch.stack(self.mass)


@contextmanager
def recording(model, columns: torch.Tensor, per_head: bool = False):
    """Within the block, every forward of `model` records the last query's attention to `columns` in each
    decoder layer. Yields the LastRowRecorder; the model's attention setting is restored afterwards."""
    _register()
    lm = text_model(model)
    config = lm.config
    recorder = LastRowRecorder(columns, len(lm.layers), per_head)
    previous = config._attn_implementation
    attns = [layer.self_attn for layer in lm.layers]
    config._attn_implementation = NAME
    for a in attns:
        a._cuelab_recorder = recorder
    try:
        yield recorder
    finally:
        config._attn_implementation = previous
        for a in attns:
            del a._cuelab_recorder


@torch.inference_mode()
def attention_to_video(model, inputs: dict, video_token_id: int, per_head: bool = False):
    """(rows, video_mass, positions) for one prompt (batch of one): rows (layers, [heads,] n_video) the attention of
    the last position to each video token, video_mass (layers, [heads]) its total on video tokens, positions the
    video tokens' sequence positions."""
    from cuelab.attention.grid import video_token_positions

    positions = video_token_positions(inputs["input_ids"], video_token_id)
    if len(positions) == 0:
        raise ValueError("the prompt holds no video token")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor) and k != "labels"}
    with recording(model, torch.as_tensor(positions), per_head) as rec:
        model(**batch, use_cache=False, logits_to_keep=1)
    rows, mass = rec.result()
    return rows.float().numpy(), mass.float().numpy(), positions
