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
  3. every (question, choice) row, i.e. the rest of its prompt + the choice, runs in ONE batched forward on the
     prefix cache repeated per row; 3-D rope positions are sliced from `get_rope_index` of each full prompt;
     the LM head runs only on the positions that predict a choice token.
`reference_scores` (one full forward per choice through the model's own forward) is what the tests compare with.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from cuelab.model.prompt import build_inputs, choice_token_ids, end_token_id


@dataclass
class ChoiceResult:
    scores: list[float]  # sum of log-probs of each choice's tokens + <|im_end|>
    mean_scores: list[float]  # the same divided by the token count
    n_tokens: list[int]
    greedy_index: int | None = None  # the greedy-constrained (vLLM grammar) answer
    greedy_tokens: list[int] | None = None
    first_logprobs: torch.Tensor | None = field(default=None, repr=False)  # full-vocab log-probs, 1st answer token

    def choice(self, rule: str = "sum") -> int:
        if rule == "greedy":
            if self.greedy_index is None:
                raise ValueError("greedy rule requested but not computed")
            return self.greedy_index
        vals = self.scores if rule == "sum" else self.mean_scores
        return max(range(len(vals)), key=lambda i: (vals[i], -i))


def unwrap(model):
    """The Qwen3VLForConditionalGeneration inside a PEFT wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def vision_is_adapted(model) -> bool:
    """True when an adapter touches the vision tower (then vision features cannot be shared with the base)."""
    visual = unwrap(model).model.visual
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
# The scorer.
# ---------------------------------------------------------------------------------------------------------------

class HFScorer:
    """Scores the choices of the questions of one video with a (possibly PEFT-wrapped) Qwen3-VL.

    `model` is in eval mode; `processor` its processor. Prompts come from cuelab.model.prompt.build_inputs."""

    def __init__(self, model, processor, question_first: bool = False, system_prompt: str | None = None,
                 vision_cache: VisionCache | None = None, max_greedy_tokens: int = 48):
        self.model, self.processor = model, processor
        self.question_first, self.system_prompt = question_first, system_prompt
        self.vision_cache = vision_cache if vision_cache is not None else VisionCache()
        self.max_greedy_tokens = max_greedy_tokens
        self.end_id = end_token_id(processor)
        self._token_bytes = None
        inner = unwrap(model)
        self.lm = inner.model.language_model
        self.cache_kw = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"

    # -- inputs (CPU) --------------------------------------------------------------------------------------------
    def prepare(self, questions: list[dict], frames=None, hint: bool = False) -> dict:
        """Processor inputs of every question of one video (pixel values kept once) + choice token ids.
        CPU only and thread-safe: the driver runs it ahead of scoring in worker threads."""
        items, pixels = [], None
        processor = video_processed_once(self.processor)
        for q in questions:
            inp = build_inputs(processor, q, frames, hint=hint, question_first=self.question_first,
                               system_prompt=self.system_prompt)
            if frames is not None and pixels is None:
                pixels = (inp["pixel_values_videos"], inp["video_grid_thw"])
            items.append({"input_ids": inp["input_ids"][0], "mm_token_type_ids": inp["mm_token_type_ids"][0],
                          "choices": choice_token_ids(self.processor, q, with_end=True),
                          "texts": [str(c) for c in q["choices"]]})
        return {"items": items, "pixels": pixels}

    # -- model pieces ----------------------------------------------------------------------------------------------
    @property
    def device(self):
        return next(unwrap(self.model).parameters()).device

    def vision_features(self, pixels, key=None):
        """(video embeddings (N, D), [deepstack features (N, D)] ) of one video, cached under `key`."""
        inner = unwrap(self.model)

        def compute():
            pv, grid = pixels
            out = inner.model.get_video_features(pv.to(self.device), grid.to(self.device))
            embeds, deep = (out.pooler_output, out.deepstack_features) if hasattr(out, "pooler_output") else out
            cat = lambda x: torch.cat(list(x), 0) if isinstance(x, (list, tuple)) else x  # noqa: E731
            return cat(embeds), [cat(d) for d in deep]

        return self.vision_cache.get(key, compute)

    def _positions(self, ids: torch.Tensor, mm: torch.Tensor, grid) -> tuple[torch.Tensor, int]:
        """3-D rope positions (3, len) of one prompt and the rope delta (text after it continues at i + delta)."""
        inner = unwrap(self.model)
        kw = {"video_grid_thw": grid.to(self.device)} if grid is not None else {}
        params = inspect.signature(inner.model.get_rope_index).parameters
        if "mm_token_type_ids" in params:
            kw["mm_token_type_ids"] = mm[None].to(self.device)
        pos, delta = inner.model.get_rope_index(ids[None].to(self.device), **kw)
        return pos[:, 0], int(delta.reshape(-1)[0])

    def _embed(self, ids: torch.Tensor, video_embeds) -> torch.Tensor:
        inner = unwrap(self.model)
        emb = inner.model.get_input_embeddings()(ids.to(self.device))
        if video_embeds is not None:
            mask = ids.to(self.device) == inner.config.video_token_id
            if int(mask.sum()):
                emb = emb.clone()
                emb[mask] = video_embeds.to(emb.dtype)
        return emb

    def _run(self, embeds, positions, cache, vis_mask=None, deep=None):
        """Language model on (B, S, D) embeddings with (3, B, S) positions; returns last hidden states."""
        kwargs = {self.cache_kw: cache, "use_cache": True}
        if vis_mask is not None and bool(vis_mask.any()):
            kwargs.update(visual_pos_masks=vis_mask, deepstack_visual_embeds=deep)
        out = self.lm(inputs_embeds=embeds, position_ids=positions, **kwargs)
        return out.last_hidden_state

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=unwrap(self.model).config.get_text_config())

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(unwrap(self.model).lm_head(hidden).float(), dim=-1)

    # -- scoring ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prepared: dict, vision_key=None, greedy: bool = False,
              first_logprobs: bool = False) -> list[ChoiceResult]:
        items, pixels = prepared["items"], prepared["pixels"]
        inner = unwrap(self.model)
        vid_tok = inner.config.video_token_id
        video_embeds, deep = self.vision_features(pixels, vision_key) if pixels is not None else (None, None)
        grid = pixels[1] if pixels is not None else None

        # full-prompt embeddings, positions and the visual mask of each question
        prompts = []
        for it in items:
            ids = it["input_ids"]
            pos, delta = self._positions(ids, it["mm_token_type_ids"], grid)
            prompts.append((ids, self._embed(ids, video_embeds), pos, delta, (ids == vid_tok).to(self.device)))

        # shared prefix: the longest common prefix, leaving >= 1 prompt token per question
        lengths = [len(p[0]) for p in prompts]
        L = min(lengths) - 1
        for p in prompts[1:]:
            diff = (p[0][:L] != prompts[0][0][:L]).nonzero()
            if len(diff):
                L = int(diff[0])
        cache = self._new_cache()
        n_vis_prefix = int(prompts[0][4][:L].sum())
        if L > 0:
            ids0, emb0, pos0, _, vis0 = prompts[0]
            self._run(emb0[None, :L], pos0[:, None, :L], cache, vis0[None, :L],
                      [d[:n_vis_prefix] for d in deep] if deep else None)

        results = [ChoiceResult([], [], []) for _ in items]
        if greedy:
            for r, p, it in zip(results, prompts, items):
                r.greedy_index, r.greedy_tokens = self._greedy(p, it, cache, L, n_vis_prefix, deep)
        self._score_choices(prompts, items, results, cache, L, n_vis_prefix, deep, first_logprobs)
        return results

    def _suffix_rows(self, prompts, items, L):
        """(row embeddings list, row positions list, row visual masks, row -> (question, choice), targets)."""
        embs, poss, viss, rows = [], [], [], []
        for qi, ((ids, emb, pos, delta, vis), it) in enumerate(zip(prompts, items)):
            n = len(ids)
            for ci, choice in enumerate(it["choices"]):
                c = torch.tensor(choice, device=self.device)
                embs.append(torch.cat([emb[L:], self._embed(c, None)]))
                cpos = (torch.arange(n, n + len(choice), device=self.device) + delta).expand(3, -1)
                poss.append(torch.cat([pos[:, L:], cpos], 1))
                viss.append(torch.cat([vis[L:], torch.zeros(len(choice), dtype=torch.bool, device=self.device)]))
                rows.append((qi, ci, n - L, choice))
        return embs, poss, viss, rows

    def _score_choices(self, prompts, items, results, cache, L, n_vis_prefix, deep, first_logprobs):
        embs, poss, viss, rows = self._suffix_rows(prompts, items, L)
        R, S = len(rows), max(len(e) for e in embs)
        D = embs[0].shape[-1]
        # right padding: padded positions come after every real token, so causal attention never sees them
        emb = embs[0].new_zeros(R, S, D)
        pos = torch.zeros(3, R, S, dtype=poss[0].dtype, device=self.device)
        vis = torch.zeros(R, S, dtype=torch.bool, device=self.device)
        for r, (e, p, v) in enumerate(zip(embs, poss, viss)):
            emb[r, :len(e)], pos[:, r, :len(e)], vis[r, :len(v)] = e, p, v
        row_deep = None
        if deep and bool(vis.any()):  # video tokens after the shared prefix (question-first layout)
            row_deep = [torch.cat([d[n_vis_prefix:]] * R) for d in deep]
        if cache.get_seq_length() > 0:
            cache.batch_repeat_interleave(R)
        hidden = self._run(emb, pos, cache, vis if row_deep else None, row_deep)
        # only positions that predict a choice token go through the LM head
        sel_r, sel_t, targets = [], [], []
        for r, (qi, ci, start, choice) in enumerate(rows):
            for t, tok in enumerate(choice):
                sel_r.append(r)
                sel_t.append(start - 1 + t)
                targets.append(tok)
        lp = self._logprobs(hidden[sel_r, sel_t])
        tok_lp = lp[torch.arange(len(targets)), torch.tensor(targets, device=lp.device)].tolist()
        k = 0
        for r, (qi, ci, start, choice) in enumerate(rows):
            s = sum(tok_lp[k:k + len(choice)])
            if ci == 0 and first_logprobs:
                results[qi].first_logprobs = lp[k].cpu()
            k += len(choice)
            res = results[qi]
            res.scores.append(float(s))
            res.mean_scores.append(float(s) / len(choice))
            res.n_tokens.append(len(choice))

    def _greedy(self, prompt, item, cache, L, n_vis_prefix, deep):
        """Greedy decoding under the choice grammar for one question, on the shared prefix cache (restored)."""
        if self._token_bytes is None:
            self._token_bytes = TokenBytes(getattr(self.processor, "tokenizer", self.processor))
        ids, emb, pos, delta, vis = prompt
        choices = [t.encode("utf-8") for t in item["texts"]]
        n = len(ids)
        d = [x[n_vis_prefix:] for x in deep] if deep else None
        hidden = self._run(emb[None, L:], pos[:, None, L:], cache, vis[None, L:], d)
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
            p = torch.full((3, 1, 1), n + step + delta, dtype=pos.dtype, device=self.device)
            hidden = self._run(self._embed(torch.tensor([tok]), None)[None], p, cache)
        cache.crop(-(cache.get_seq_length() - L))
        index = next((i for i, c in enumerate(choices) if c == done), None)
        return index, out

    def grammar_logprobs(self, logprobs: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """First-answer-token log-probs renormalised over the tokens the choice grammar allows (what vLLM
        reports with structured outputs); -inf elsewhere."""
        if self._token_bytes is None:
            self._token_bytes = TokenBytes(getattr(self.processor, "tokenizer", self.processor))
        allowed, complete = self._token_bytes.allowed(b"", [t.encode("utf-8") for t in texts])
        ids = torch.tensor(allowed + ([self.end_id] if complete else []), dtype=torch.long)
        out = torch.full_like(logprobs, float("-inf"))
        out[ids] = torch.log_softmax(logprobs[ids], -1)
        return out

    def _token_bytes_of(self, tok: int) -> bytes:
        dec = _byte_decoder()
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return bytes(dec[c] for c in tokenizer.convert_ids_to_tokens(tok))


@torch.no_grad()
def reference_scores(model, processor, question: dict, frames=None, hint: bool = False, question_first=False,
                     system_prompt=None) -> ChoiceResult:
    """The slow path: one full forward per choice (prompt + choice + <|im_end|>) through the model's own
    forward; the fast path must give the same scores."""
    scores, n_tok = [], []
    for choice in question["choices"]:
        inp = build_inputs(processor, question, frames, answer=str(choice), hint=hint,
                           question_first=question_first, system_prompt=system_prompt)
        start, labels = inp.pop("answer_start"), inp.pop("labels")
        dev = next(unwrap(model).parameters()).device
        logits = model(**{k: v.to(dev) for k, v in inp.items()}).logits[0].float()
        lp = torch.log_softmax(logits[start - 1:-1], -1)
        tgt = labels[0, start:].to(dev)
        scores.append(float(lp[torch.arange(len(tgt)), tgt].sum()))
        n_tok.append(len(tgt))
    return ChoiceResult(scores, [s / n for s, n in zip(scores, n_tok)], n_tok)
