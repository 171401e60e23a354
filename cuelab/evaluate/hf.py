"""Choice scoring through transformers: the log-likelihood of each choice given the prompt.

Every score is log p(choice tokens + `<|im_end|>` | prompt) (the answer exactly as training writes it), summed
(`scores`) and divided by its token count (`mean_scores`). `rule="greedy"` instead decodes token by token,
taking the most likely token among those that keep the text a prefix of some choice (and `<|im_end|>` once a
choice is complete): the rule vLLM's `choice` grammar applies at temperature 0.

Fast path, one video at a time (all its questions together):
  1. the vision tower runs once per (video, condition); with a LoRA on the LLM only its output is shared by the
     base and the fine-tuned model (`VisionCache`);
  2. the longest common prefix of the video's prompts (system + video, for the video-first layout) runs once
     and its KV cache is kept;
  3. every (question, choice) row, i.e. the rest of its prompt + the choice, runs in ONE forward: as a batch of
     rows whose attention reads their video's prefix K/V in place (`shared_prefix_attention`: the prefix part
     and the row's own causal part computed apart and merged by their log-sum-exp, so no row copies the
     ~3,700-token prefix cache), or on the prefix cache repeated per row (`shared_prefix=False`), or
     (`pack_choices`) packed into one sequence under a tree attention mask; 3-D rope positions come from
     `get_rope_index` of each full prompt; the LM head runs only on the positions that predict a choice token.
     Bookkeeping stays on the CPU.
Several videos go through steps 1-3 together (`score_many`): one vision call, one batched prefix, one forward
for all their rows (on a GPU the per-video launch overhead is most of the time at one video a call).
`reference_scores` (one full forward per choice through the model's own forward) is what the tests compare with.

`rule="sampled"` (the first study's decoding, `sample_answer`): generate() with vLLM's sampling settings (a
presence-penalty processor, temperature, top-k, top-p, seeded per question), confined to the choices' token paths
by `prefix_allowed_tokens_fn` when constrained. A choice string that appears twice is one answer: `prepare`
scores the distinct strings.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections import OrderedDict
from dataclasses import dataclass, field
import torch

from cuelab.evaluate.choices import ChoiceResult  # noqa: F401  (re-exported: scorer results)
from cuelab.evaluate.predictions import distinct_choices
from cuelab.model.families import family_of, unwrap
from cuelab.model.prompt import PromptSpec, build_inputs, choice_token_ids, end_token_id, resolve_spec


def vision_is_adapted(model) -> bool:
    """True when an adapter touches the vision tower (then vision features cannot be shared with the base)."""
    visual = family_of(model).vision_tower(model)
    return any(hasattr(m, "lora_A") for m in visual.modules())


class VisionCache:
    """Vision-tower outputs per key (video, condition), a few kept (LRU): embeddings + deepstack features."""

    def __init__(self, size: int = 4):
        self.size, self.items = size, OrderedDict()
        self.hits = self.misses = 0

    def get(self, key, compute):
        if key is not None and key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key]
        self.misses += 1
        value = compute()
        if key is not None and self.size > 0:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class _OnceVideoProcessor:
    """Wraps a video processor: the same frames array is processed once, later calls get that result (every
    question of a video has the same pixels; the processor still builds each prompt's text and token layout)."""

    def __init__(self, inner):
        self._inner, self._key, self._value = inner, None, None

    def __call__(self, videos=None, *args, **kwargs):
        arr = videos[0] if isinstance(videos, (list, tuple)) and len(videos) == 1 else None
        key = (id(arr), repr(sorted((k, repr(v)) for k, v in kwargs.items()))) if arr is not None else None
        if key is None or key != self._key:
            self._value = self._inner(videos, *args, **kwargs)
            self._key, self._arr = key, arr  # keep the array alive: its id stays unique
        return copy.copy(self._value)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def video_processed_once(processor):
    """A shallow copy of `processor` whose video processor runs once per frames array (see above)."""
    if not hasattr(processor, "video_processor"):
        return processor
    out = copy.copy(processor)
    out.video_processor = _OnceVideoProcessor(processor.video_processor)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The choice grammar: which tokens keep the generated text a prefix of some choice (as vLLM's `choice` does).
# ---------------------------------------------------------------------------------------------------------------

def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {v: k for k, v in bytes_to_unicode().items()}


class TokenBytes:
    """The byte string of every ordinary token of a byte-level BPE tokenizer (special tokens left out)."""

    def __init__(self, tokenizer):
        dec = _byte_decoder()
        special = set(tokenizer.all_special_ids) | {int(i) for i in tokenizer.get_added_vocab().values()}
        self.by_bytes: dict[bytes, list[int]] = {}
        for tok, i in tokenizer.get_vocab().items():
            if i in special:
                continue
            try:
                b = bytes(dec[c] for c in tok)
            except KeyError:  # not a byte-level token
                continue
            self.by_bytes.setdefault(b, []).append(int(i))

    def allowed(self, done: bytes, choices: list[bytes]) -> tuple[list[int], bool]:
        """(token ids that extend `done` towards some choice, whether `done` is a complete choice)."""
        ids: set[int] = set()
        complete = False
        for c in choices:
            if not c.startswith(done):
                continue
            rest = c[len(done):]
            complete |= not rest
            for k in range(1, len(rest) + 1):
                ids.update(self.by_bytes.get(rest[:k], ()))
        return sorted(ids), complete


# ---------------------------------------------------------------------------------------------------------------
# Choice rows reading their video's prefix in place.
# ---------------------------------------------------------------------------------------------------------------

SHARED_PREFIX_ATTENTION = "cuelab_shared_prefix"


class SharedPrefix:
    """What shared_prefix_attention reads besides the rows' own K/V: the prefix cache (one batch row per video)
    and where each choice row sits in a (videos x most rows a video) grid."""

    def __init__(self, cache, slots: list[int], device=None):
        """`slots[r]`: the cache row (video) of choice row r; a video's rows are contiguous, videos in order."""
        counts = [slots.count(v) for v in range(max(slots) + 1)]
        if slots != [v for v, n in enumerate(counts) for _ in range(n)]:
            raise ValueError("choice rows must be grouped by video, in cache-row order")
        self.cache, self.n_videos, self.max_rows = cache, len(counts), max(counts)
        # row r -> its place in a (videos x max_rows) grid: every video's rows attend to its prefix in ONE call
        place = [v * self.max_rows + j for v, n in enumerate(counts) for j in range(n)]
        self.place = torch.tensor(place).to(device, non_blocking=True) if device is not None else torch.tensor(place)

    def layer(self, i: int):
        layer = self.cache.layers[i]
        return layer.keys, layer.values


def _attend_with_lse(q, k, v, scale: float):
    """Full (unmasked) attention of q (V, Hkv, M, d) over k, v (V, Hkv, L, d): (output, log-sum-exp (V, Hkv, M))."""
    if q.is_cuda:  # the memory-efficient SDPA kernel also returns the log-sum-exp (bf16 and float32)
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False,
                                                                          scale=scale)[:2]
        return out.float(), lse[..., :q.shape[2]].float()
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    return torch.matmul(torch.softmax(s, -1), v.float()), torch.logsumexp(s, -1)


@torch.compiler.disable  # a Python loop over videos: compiled decoder layers call it eagerly (a graph break)
def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prefix: SharedPrefix | None = None, **kwargs):
    """Attention of choice rows (R, H, S, d) over [their video's prefix ; their own tokens, causally] without
    building per-row K/V: softmax over the union = the two partial softmaxes weighted by their log-sum-exps.
    `key`/`value` (R, Hkv, S, d) are the rows' own (no cache update); rows are right-padded, so the causal
    part never lets a real token see padding. Returns (R, S, H, d) like transformers' SDPA path."""
    R, H, S, d = query.shape
    hkv = key.shape[1]
    rep = H // hkv
    scale = scaling if scaling is not None else d ** -0.5
    q = query.view(R, hkv, rep, S, d)  # head h reads kv head h // rep (transformers' repeat_kv order)
    s_own = torch.matmul(q.float(), key.float()[:, :, None].transpose(-1, -2)) * scale  # (R, hkv, rep, S, S)
    s_own = s_own.masked_fill(torch.ones(S, S, dtype=torch.bool, device=query.device).triu(1), float("-inf"))
    lse_own = torch.logsumexp(s_own, -1)
    out_own = torch.matmul(torch.softmax(s_own, -1), value.float()[:, :, None])
    # the prefix part: each video's rows (zero-padded to the same count) as one long query over its prefix
    pk, pv = shared_prefix.layer(module.layer_idx)
    V, n = shared_prefix.n_videos, shared_prefix.max_rows
    grid = q.new_zeros(V * n, hkv, rep, S, d).index_copy_(0, shared_prefix.place, q)
    qv = grid.view(V, n, hkv, rep, S, d).permute(0, 2, 3, 1, 4, 5).reshape(V, hkv, rep * n * S, d)
    o, lse = _attend_with_lse(qv, pk, pv, scale)
    out_pre = o.view(V, hkv, rep, n, S, d).permute(0, 3, 1, 2, 4, 5).reshape(V * n, hkv, rep, S, d)
    lse_pre = lse.reshape(V, hkv, rep, n, S).permute(0, 3, 1, 2, 4).reshape(V * n, hkv, rep, S)
    out_pre, lse_pre = out_pre[shared_prefix.place], lse_pre[shared_prefix.place]
    m = torch.maximum(lse_pre, lse_own)
    w_pre, w_own = torch.exp(lse_pre - m)[..., None], torch.exp(lse_own - m)[..., None]
    out = (w_pre * out_pre + w_own * out_own) / (w_pre + w_own)
    return out.view(R, H, S, d).transpose(1, 2).contiguous().to(query.dtype), None


def _register_shared_prefix_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SHARED_PREFIX_ATTENTION, sdpa_mask)  # the mask is not read


# ---------------------------------------------------------------------------------------------------------------
# The scorer.
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class ChoiceRows:
    """The (question, choice) rows of a scoring call, concatenated: `rows[r]` = (video slot, question, choice,
    start of the choice in the row, choice token ids); `embeds` / `vis` / `positions` over all rows' tokens."""

    rows: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    slots: list = field(default_factory=list)
    embeds: torch.Tensor | None = None
    vis: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    extras: list | None = None  # per-video-token extra inputs (Qwen3-VL: deepstack) of rows' video tokens


class HFScorer:
    """Scores the choices of the questions of one video with a (possibly PEFT-wrapped) video VLM; what differs
    between model families (vision features, positions, the language model's extra inputs) is asked of the
    model's family (cuelab.model.families).

    `model` is in eval mode; `processor` its processor. Prompts come from cuelab.model.prompt.build_inputs with
    `spec` (or the cuelab style with `question_first` / `system_prompt`); the hint is chosen per prepare()."""

    def __init__(self, model, processor, spec: PromptSpec | None = None, vision_cache: VisionCache | None = None,
                 max_greedy_tokens: int = 48, pack_choices: bool = False, shared_prefix: bool = True,
                 question_first: bool = False, system_prompt: str | None = None):
        self.model, self.processor = model, processor
        self.spec = resolve_spec(spec, question_first=question_first, system_prompt=system_prompt)
        self.vision_cache = vision_cache if vision_cache is not None else VisionCache()
        self.events: list | None = None  # set to a list to record (stage, start, end) CUDA events (benchmarks)
        self.max_greedy_tokens = max_greedy_tokens
        self.pack_choices = pack_choices
        self.shared_prefix = shared_prefix
        if shared_prefix:
            _register_shared_prefix_attention()
        self.end_id = end_token_id(processor)
        self._token_bytes = None
        self.family = family_of(model)
        self.lm = self.family.language_model(model)
        self.video_token_id = self.family.video_token_id(model)
        self.cache_kw = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"

    # -- inputs (CPU) --------------------------------------------------------------------------------------------
    def prepare(self, questions: list[dict], frames=None, hint: bool = False) -> dict:
        """Processor inputs of every question of one video (pixel values kept once) + choice token ids.
        Thread-safe: the driver runs it ahead of scoring in worker threads. On a GPU the video processor's
        rescale / normalise / patch steps run there (the frames go over as uint8: a quarter of the bytes, and
        the CPU work that capped throughput is gone); the rest is CPU work."""
        items, pixels = [], None
        processor = video_processed_once(self.processor)
        device = self.device if self.device.type == "cuda" else None
        spec = dataclasses.replace(self.spec, hint=hint)
        for q in questions:
            inp = build_inputs(processor, q, frames, device=device, spec=spec)
            if frames is not None and pixels is None:
                pixels = self.family.video_pixels(inp, self.dtype)
            # a choice string that appears twice is one answer: its distinct strings are scored (`back` maps them
            # to the question's choices); the prompt still shows the choices as the question has them
            texts, back = distinct_choices([str(c) for c in q["choices"]])
            mm = inp.get("mm_token_type_ids")
            items.append({"input_ids": inp["input_ids"][0], "mm_token_type_ids": mm[0] if mm is not None else None,
                          "choices": choice_token_ids(self.processor, {"choices": texts}, with_end=True),
                          "texts": texts, "back": back})
        return {"items": items, "pixels": pixels}

    def sample(self, prepared: dict, sampling, seeds: list[int]) -> list[tuple[str, list[int]]]:
        """(text, token ids) sampled for every question of one prepared video (`eval.rule: sampled`), from the
        prepared inputs; constrained to the question's distinct choices when `sampling.constrained`."""
        tok = getattr(self.processor, "tokenizer", self.processor)
        out = []
        for it, seed in zip(prepared["items"], seeds):
            ids = it["input_ids"][None]
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if it["mm_token_type_ids"] is not None:
                inputs["mm_token_type_ids"] = it["mm_token_type_ids"][None]
            if prepared["pixels"] is not None:
                inputs.update(prepared["pixels"])
            out.append(sample_answer(self.model, inputs, sampling, seed, self.end_id, tok,
                                     it["choices"] if sampling.constrained else None))
        return out

    # -- model pieces ----------------------------------------------------------------------------------------------
    @property
    def device(self):
        return next(unwrap(self.model).parameters()).device

    @property
    def dtype(self):
        return self.family.vision_tower(self.model).dtype

    def vision_features(self, pixels, key=None):
        """(video embeddings (N, D), [deepstack features (N, D)] ) of one video, cached under `key`."""
        return self.vision_features_many([pixels], [key])[0]

    def vision_features_many(self, pixels_list, keys) -> list:
        """vision_features of several videos: the ones not cached go through the vision tower in ONE call
        (fewer, larger kernels: the tower is launch-bound at one video)."""
        out = [None] * len(pixels_list)
        todo = []
        for i, (px, key) in enumerate(zip(pixels_list, keys)):
            if px is None:
                out[i] = (None, None)
            elif key is not None and key in self.vision_cache.items:
                out[i] = self.vision_cache.get(key, None)
            else:
                todo.append(i)
        if todo:
            feats = self.family.video_features(self.model, [pixels_list[i] for i in todo], self.device)
            for f, i in zip(feats, todo):
                value = (f.embeds, f.extras)
                out[i] = self.vision_cache.get(keys[i], lambda v=value: v)
        return out

    def _positions(self, ids: torch.Tensor, mm, pixels) -> tuple[torch.Tensor, int]:
        """Rope positions (axes, len) of one prompt, on the CPU (no GPU syncs), and the rope delta: text
        after the prompt continues at index + delta."""
        return self.family.positions(self.model, ids, mm, pixels)

    def _embed(self, ids: torch.Tensor, video_embeds=None) -> torch.Tensor:
        """Token embeddings of CPU `ids` with `video_embeds` (in order) at the video tokens."""
        emb = unwrap(self.model).get_input_embeddings()(ids.to(self.device, non_blocking=True))
        idx = (ids == self.video_token_id).nonzero().squeeze(1)  # on the CPU: no sync
        if len(idx):
            emb[idx.to(self.device, non_blocking=True)] = video_embeds.to(emb.dtype)
        return emb

    def _run(self, embeds, positions, cache, vis_mask=None, deep=None, attention_mask=None, shared=None):
        """Language model on (B, S, D) embeddings with (3, B, S) positions; returns last hidden states.
        `vis_mask` (CPU bool, B x S) marks video tokens, which get the deepstack features `deep`. With `shared`
        (a SharedPrefix) the rows attend to their video's prefix through shared_prefix_attention and `cache`
        is not touched."""
        kwargs = {self.cache_kw: cache, "use_cache": True}
        if vis_mask is not None and bool(vis_mask.any()):
            kwargs.update(self.family.lm_inputs(vis_mask.to(self.device, non_blocking=True), deep))
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        pos = positions.to(self.device, non_blocking=True)
        if self.family.rope_axes == 1:  # (1, B, S) -> the (B, S) position ids of a 1-D rope language model
            pos = pos[0]
        if shared is None:
            return self.lm(inputs_embeds=embeds, position_ids=pos, **kwargs).last_hidden_state
        kwargs.update({self.cache_kw: None, "use_cache": False, "shared_prefix": shared})
        config = self.lm.config
        before = config._attn_implementation
        config._attn_implementation = SHARED_PREFIX_ATTENTION
        try:
            return self.lm(inputs_embeds=embeds, position_ids=pos, **kwargs).last_hidden_state
        finally:
            config._attn_implementation = before

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=unwrap(self.model).config.get_text_config())

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(unwrap(self.model).lm_head(hidden).float(), dim=-1)

    # -- scoring ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prepared: dict, vision_key=None, greedy: bool = False,
              first_logprobs: bool = False) -> list[ChoiceResult]:
        """Scores of every question of one video (see the module docstring for the steps)."""
        return self.score_many([prepared], [vision_key], greedy, first_logprobs)[0]

    def _plan(self, items, pixels) -> tuple[list, int]:
        """Per question (CPU): (ids, rope positions, delta, video-token mask); and the shared prefix length: the
        longest common prefix of the prompts, leaving >= 1 prompt token per question."""
        vid_tok = self.video_token_id
        prompts = []
        for it in items:
            ids = it["input_ids"].cpu()
            pos, delta = self._positions(ids, it["mm_token_type_ids"], pixels)
            prompts.append((ids, pos, delta, ids == vid_tok))
        L = min(len(p[0]) for p in prompts) - 1
        for p in prompts[1:]:
            diff = (p[0][:L] != prompts[0][0][:L]).nonzero()
            if len(diff):
                L = int(diff[0])
        return prompts, L

    @torch.no_grad()
    def score_many(self, prepared_list: list[dict], vision_keys=None, greedy: bool = False,
                   first_logprobs: bool = False) -> list[list[ChoiceResult]]:
        """score() of several videos at once: one vision-tower call for those not cached; videos whose shared
        prefix has the same length and holds all their video tokens run their prefixes as one batch and all
        their (question, choice) rows in one forward, each row on its own video's prefix cache. The same
        scores as one video at a time (up to the order of floating-point sums)."""
        n = len(prepared_list)
        keys = list(vision_keys) if vision_keys is not None else [None] * n
        self._mark("start")
        feats = self.vision_features_many([p["pixels"] for p in prepared_list], keys)
        self._mark("vision")
        plans = [self._plan(p["items"], p["pixels"]) for p in prepared_list]
        groups: dict = {}
        for i, (prompts, L) in enumerate(plans):
            n_video = 0 if feats[i][0] is None else len(feats[i][0])
            n_vis = int(prompts[0][3][:L].sum())
            together = not greedy and not self.pack_choices and L > 0 and n_vis == n_video
            groups.setdefault(("batch", L, n_vis > 0) if together else ("one", i), []).append(i)
        out: list = [None] * n
        for idx in groups.values():
            L = plans[idx[0]][1]
            entries = []
            cache = self._new_cache()
            embs, poss, viss, deeps = [], [], [], []
            for i in idx:
                prompts = plans[i][0]
                video_embeds, deep = feats[i]
                n_vis = int(prompts[0][3][:L].sum())  # video tokens inside the prefix
                entries.append((prompts, prepared_list[i]["items"], n_vis, video_embeds, deep))
                if L > 0:
                    ids0, pos0, _, vis0 = prompts[0]
                    embs.append(self._embed(ids0[:L], video_embeds[:n_vis] if n_vis else None))
                    poss.append(pos0[:, :L])
                    viss.append(vis0[:L])
                    if n_vis:
                        deeps.append([d[:n_vis] for d in deep])
            if L > 0:
                self._run(torch.stack(embs), torch.stack(poss, 1), cache, torch.stack(viss),
                          [torch.cat(ds) for ds in zip(*deeps)] if deeps else None)
            self._mark("prefix")
            results = [[ChoiceResult([], [], []) for _ in e[1]] for e in entries]
            if greedy:  # groups of one video (the prefix cache holds one row)
                prompts, items, n_vis, video_embeds, deep = entries[0]
                for r, p, it in zip(results[0], prompts, items):
                    r.greedy_index, r.greedy_tokens = self._greedy(p, it, cache, L, n_vis, video_embeds, deep)
            self._score_choices(entries, results, cache, L, first_logprobs)
            self._mark("choices")
            for i, r in zip(idx, results):
                out[i] = r
        return out

    def _mark(self, stage: str) -> None:
        if self.events is not None and torch.cuda.is_available():
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events.append((stage, ev))

    def _tree_mask(self, lengths: list[int], L: int, dtype) -> torch.Tensor:
        """(1, 1, S, L + S) mask for rows packed into one sequence after an L-token prefix: each row sees the
        prefix and itself causally, never another row (True / 0.0 = attend)."""
        S = sum(lengths)
        allow = torch.zeros(S, L + S, dtype=torch.bool)
        allow[:, :L] = True
        a = 0
        for n in lengths:
            allow[a:a + n, L + a:L + a + n] = torch.ones(n, n, dtype=torch.bool).tril()
            a += n
        if getattr(self.lm.config, "_attn_implementation", "sdpa") == "eager":  # additive float mask
            m = torch.zeros(S, L + S, dtype=dtype).masked_fill(~allow, torch.finfo(dtype).min)
            return m[None, None].to(self.device)
        return allow[None, None].to(self.device, non_blocking=True)

    def _score_choices(self, entries, results, cache, L, first_logprobs):
        """Every (question, choice) row of the entries' videos in one forward on the prefix cache (one cache row
        per video): side by side as a batch, each row on its own video's cache row (default: fastest measured
        on an H100), or with `pack_choices` (one video) packed into ONE sequence under a tree attention mask
        (the prefix K/V read once, never copied: least memory)."""
        rows = self._choice_rows(entries, L)
        if self.pack_choices and len(entries) == 1:
            mask = self._tree_mask(rows.lengths, cache.get_seq_length(), rows.embeds.dtype)
            hidden = self._run(rows.embeds[None], rows.positions[:, None], cache,
                               rows.vis[None] if rows.extras else None, rows.extras, attention_mask=mask)[0]
            starts = torch.tensor([0] + rows.lengths[:-1]).cumsum(0).tolist()
        else:
            hidden, starts = self._rows_side_by_side(rows, cache, len(entries))
        self._collect(rows, hidden, starts, results, first_logprobs)

    def _choice_rows(self, entries, L) -> "ChoiceRows":
        """The rows of every (question, choice) of the entries' videos: the prompt after the shared prefix + the
        choice's tokens, with their embeddings (video features where a question-first prompt has video tokens
        after the prefix), positions and video-token mask."""
        vid_tok = self.video_token_id
        embs, all_ids, row_pos, extras = [], [], [], []
        out = ChoiceRows()
        for slot, (prompts, items, n_vis, video_embeds, deep) in enumerate(entries):
            row_ids = []
            for qi, ((ids, pos, delta, vis), it) in enumerate(zip(prompts, items)):
                n = len(ids)
                for ci, choice in enumerate(it["choices"]):
                    row_ids.append(torch.cat([ids[L:], torch.tensor(choice, dtype=ids.dtype)]))
                    cpos = (torch.arange(n, n + len(choice), dtype=pos.dtype) + delta).expand(pos.shape[0], -1)
                    row_pos.append(torch.cat([pos[:, L:], cpos], 1))
                    out.lengths.append(n - L + len(choice))
                    out.rows.append((slot, qi, ci, n - L, choice))
                    out.slots.append(slot)
            ids = torch.cat(row_ids)
            all_ids.append(ids)
            # video tokens after the prefix (question-first layouts): each row gets the rest of the video
            n_rows_vis = int((ids == vid_tok).sum()) // max(1, len(video_embeds) - n_vis) if (
                video_embeds is not None and bool((ids == vid_tok).any())) else 0
            embs.append(self._embed(ids, torch.cat([video_embeds[n_vis:]] * n_rows_vis) if n_rows_vis else None))
            if n_rows_vis:
                extras.append([torch.cat([d[n_vis:]] * n_rows_vis) for d in deep])
        out.embeds, out.vis, out.positions = torch.cat(embs), torch.cat(all_ids) == vid_tok, torch.cat(row_pos, 1)
        out.extras = [torch.cat(ds) for ds in zip(*extras)] if extras else None
        return out

    def _rows_side_by_side(self, rows: "ChoiceRows", cache, n_videos: int):
        """(hidden states (R * S, D), each row's start) of the rows as a right-padded batch (padding comes after
        every real token: causal attention never sees it), each row on its video's prefix cache row."""
        emb, pos = rows.embeds, rows.positions
        R, S = len(rows.rows), max(rows.lengths)
        starts = [r * S for r in range(R)]
        flat_cpu = torch.cat([torch.arange(a, a + n) for a, n in zip(starts, rows.lengths)])
        flat = flat_cpu.to(self.device, non_blocking=True)
        emb_b = emb.new_zeros(R * S, emb.shape[-1]).index_copy_(0, flat, emb).view(R, S, -1)
        pos_b = torch.zeros(pos.shape[0], R * S, dtype=pos.dtype)
        pos_b[:, flat_cpu] = pos
        vis_b = torch.zeros(R * S, dtype=torch.bool)
        vis_b[flat_cpu] = rows.vis
        shared = None
        if cache.get_seq_length() > 0:
            if self.shared_prefix:
                shared = SharedPrefix(cache, rows.slots, self.device)
            elif n_videos == 1:
                cache.batch_repeat_interleave(R)
            else:
                cache.batch_select_indices(torch.tensor(rows.slots).to(self.device, non_blocking=True))
        hidden = self._run(emb_b, pos_b.view(pos.shape[0], R, S), cache, vis_b.view(R, S) if rows.extras else None,
                           rows.extras, shared=shared)
        return hidden.reshape(R * S, -1), starts

    def _collect(self, rows: "ChoiceRows", hidden, starts, results, first_logprobs) -> None:
        """Choice scores from the hidden states: only positions that predict a choice token go through the LM
        head."""
        sel, targets = [], []
        for a, (slot, qi, ci, start, choice) in zip(starts, rows.rows):
            sel += [a + start - 1 + t for t in range(len(choice))]
            targets += choice
        lp = self._logprobs(hidden[torch.tensor(sel).to(self.device, non_blocking=True)])
        tok_lp = lp[torch.arange(len(targets), device=lp.device), torch.tensor(targets, device=lp.device)].tolist()
        k = 0
        for slot, qi, ci, start, choice in rows.rows:
            s = sum(tok_lp[k:k + len(choice)])
            res = results[slot][qi]
            if ci == 0 and first_logprobs:
                res.first_logprobs = lp[k].cpu()
            k += len(choice)
            res.scores.append(float(s))
            res.mean_scores.append(float(s) / len(choice))
            res.n_tokens.append(len(choice))

    def _greedy(self, prompt, item, cache, L, n_vis, video_embeds, deep):
        """Greedy decoding under the choice grammar for one question, on the shared prefix cache (restored)."""
        if self._token_bytes is None:
            self._token_bytes = TokenBytes(getattr(self.processor, "tokenizer", self.processor))
        ids, pos, delta, vis = prompt
        choices = [(self.family.answer_prefix + t).encode("utf-8") for t in item["texts"]]  # as scored
        n = len(ids)
        has_vis = bool(vis[L:].any())
        emb = self._embed(ids[L:], video_embeds[n_vis:] if has_vis else None)
        hidden = self._run(emb[None], pos[:, None, L:], cache, vis[None, L:],
                           [x[n_vis:] for x in deep] if has_vis else None)
        done, out = b"", []
        for step in range(self.max_greedy_tokens + 1):
            logits = unwrap(self.model).lm_head(hidden[0, -1]).float()
            allowed, complete = self._token_bytes.allowed(done, choices)
            cand = allowed + ([self.end_id] if complete else [])
            if not cand:
                break
            tok = cand[int(torch.argmax(logits[torch.tensor(cand, device=logits.device)]))]
            out.append(tok)
            if tok == self.end_id:
                break
            done += self._token_bytes_of(tok)
            p = torch.full((pos.shape[0], 1, 1), n + step + delta, dtype=pos.dtype)
            hidden = self._run(self._embed(torch.tensor([tok]))[None], p, cache)
        cache.crop(-(cache.get_seq_length() - L))
        index = next((i for i, c in enumerate(choices) if c == done), None)
        return index, out

    def grammar_logprobs(self, logprobs: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """First-answer-token log-probs renormalised over the tokens the choice grammar allows (what vLLM
        reports with structured outputs); -inf elsewhere."""
        if self._token_bytes is None:
            self._token_bytes = TokenBytes(getattr(self.processor, "tokenizer", self.processor))
        texts = [self.family.answer_prefix + t for t in texts]  # the answer as the template writes it
        allowed, complete = self._token_bytes.allowed(b"", [t.encode("utf-8") for t in texts])
        ids = torch.tensor(allowed + ([self.end_id] if complete else []), dtype=torch.long)
        out = torch.full_like(logprobs, float("-inf"))
        out[ids] = torch.log_softmax(logprobs[ids], -1)
        return out

    def _token_bytes_of(self, tok: int) -> bytes:
        dec = _byte_decoder()
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return bytes(dec[c] for c in tokenizer.convert_ids_to_tokens(tok))


# ---------------------------------------------------------------------------------------------------------------
# The first study's decoding (`eval.rule: sampled`): sampling as vLLM's sampler does it, through generate().
# ---------------------------------------------------------------------------------------------------------------

def _presence_penalty_processor(penalty: float, prompt_len: int):
    from transformers import LogitsProcessor

    class PresencePenalty(LogitsProcessor):
        """vLLM's presence penalty: `penalty` off the logit of every token the output already holds (the prompt
        is not counted). Runs after the choice constraint (a masked -inf stays -inf) and before temperature,
        top-k and top-p, in vLLM's order."""

        def __call__(self, input_ids, scores):
            out = input_ids[:, prompt_len:]
            if out.shape[1] == 0:
                return scores
            seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, out, True)
            return scores - penalty * seen.to(scores.dtype)

    return PresencePenalty()


def choice_trie(conts: list[list[int]]) -> dict[tuple, list[int]]:
    """Generated prefix -> the tokens that keep it on some choice's token path (each path ends in <|im_end|>)."""
    nxt: dict[tuple, set] = {}
    for c in conts:
        for t in range(len(c)):
            nxt.setdefault(tuple(c[:t]), set()).add(int(c[t]))
    return {k: sorted(v) for k, v in nxt.items()}


@torch.no_grad()
def sample_answer(model, inputs: dict, sampling, seed: int, end_id: int, tokenizer,
                  conts: list[list[int]] | None = None) -> tuple[str, list[int]]:
    """One answer drawn with `sampling` (a SamplingConfig: temperature, top_p, top_k, presence and repetition
    penalty, max_tokens; temperature 0 = greedy) from a generator seeded with `seed` (the global RNG is left as
    it was). With `conts` (each choice's tokens + <|im_end|>) only those token paths can be drawn
    (`prefix_allowed_tokens_fn`); without, free text. Returns (text without the end token, generated ids)."""
    n = inputs["input_ids"].shape[1]
    kw = dict(do_sample=sampling.temperature > 0, max_new_tokens=sampling.max_tokens, eos_token_id=end_id,
              pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id,
              repetition_penalty=sampling.repetition_penalty)
    if kw["do_sample"]:  # vLLM's top_k -1 / 0 and top_p 1 mean off, as in transformers with 0 and 1.0
        kw.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=max(0, sampling.top_k))
    procs = [_presence_penalty_processor(sampling.presence_penalty, n)] if sampling.presence_penalty else []
    if conts is not None:
        trie = choice_trie(conts)
        kw["prefix_allowed_tokens_fn"] = lambda _b, ids: trie.get(tuple(ids[n:].tolist()), [end_id])
    dev = next(unwrap(model).parameters()).device
    from transformers import LogitsProcessorList

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(**{k: v.to(dev) for k, v in inputs.items()}, logits_processor=LogitsProcessorList(procs),
                             **kw)
    toks = [int(t) for t in out[0, n:].tolist()]
    body = toks[:-1] if toks and toks[-1] == end_id else toks
    return tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False), toks


@torch.no_grad()
def reference_scores(model, processor, question: dict, frames=None, hint: bool = False, question_first=False,
                     system_prompt=None, *, spec: PromptSpec | None = None) -> ChoiceResult:
    """The slow path: one full forward per choice (prompt + choice + <|im_end|>, whatever the training target of
    the style) through the model's own forward; the fast path must give the same scores."""
    prompt = build_inputs(processor, question, frames, spec=resolve_spec(spec, hint, question_first, system_prompt))
    start = prompt["input_ids"].shape[1]
    dev = next(unwrap(model).parameters()).device
    scores, n_tok = [], []
    for cont in choice_token_ids(processor, question, with_end=True):
        tgt = torch.tensor([cont], dtype=prompt["input_ids"].dtype)
        inp = {**prompt, "input_ids": torch.cat([prompt["input_ids"], tgt], 1),
               "attention_mask": torch.cat([prompt["attention_mask"], torch.ones_like(tgt)], 1),
               **({"mm_token_type_ids": torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(tgt)], 1)}
                  if "mm_token_type_ids" in prompt else {})}
        logits = model(**{k: v.to(dev) for k, v in inp.items()}).logits[0].float()
        lp = torch.log_softmax(logits[start - 1:-1], -1)
        scores.append(float(lp[torch.arange(len(cont)), tgt[0].to(dev)].sum()))
        n_tok.append(len(cont))
    return ChoiceResult(scores, [s / n for s, n in zip(scores, n_tok)], n_tok)
