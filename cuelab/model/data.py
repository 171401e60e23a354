"""Training samples: questions x conditions, seeded order, frames through THE sampling function, a collator.

A sample is (question, condition); its video is `<videos_root>/<condition>/<video>` (any accepted format).
The order of an epoch is a pure function of (seed, phase, epoch), so a resumed run replays the same batches.
A video that cannot be read is reported once (errors.jsonl) and its samples are dropped from their batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from cuelab.errors import DataError
from cuelab.fsutil import append_jsonl
from cuelab.model.prompt import IGNORE_INDEX, PromptSpec, build_inputs
from cuelab.question import load_questions as _load
from cuelab.question import object_count


def load_questions(path: str | Path) -> list[dict]:
    """The training questions' records (cuelab.question's loader, strict: a record missing a field, with bad
    choices or an answer that is not one of them, or whose id or video cannot name a file, raises DataError
    naming the file, line and field). Records, since the prompt builder takes them."""
    return [q.record for q in _load(path, strict=True)]


def select(questions: list[dict], kinds: list[str] | None = None, max_objects: int | None = None) -> list[dict]:
    """The questions of a curriculum phase: given kinds, scenes with at most `max_objects` objects
    (questions whose object count is unknown are kept)."""
    out = []
    for q in questions:
        if kinds is not None and q.get("kind") not in kinds:
            continue
        n = object_count(q)
        if max_objects is not None and n is not None and n > max_objects:
            continue
        out.append(q)
    return out


@dataclass(frozen=True)
class Sample:
    question: dict
    condition: str


def mix(questions: list[dict], conditions: dict[str, float], seed: int) -> list[Sample]:
    """Questions x conditions. A weight w gives floor(w) copies of every question in that condition plus a
    seeded fraction w - floor(w) of them (so {plain: 1, trajectory: 1} is every question twice)."""
    rng = np.random.default_rng(seed)
    out = []
    for cond in sorted(conditions):
        w = float(conditions[cond])
        if w < 0:
            raise DataError(f"condition weight {w} < 0", field=f"train.conditions.{cond}")
        whole, frac = int(w), w - int(w)
        for _ in range(whole):
            out += [Sample(q, cond) for q in questions]
        if frac > 0:
            k = int(round(frac * len(questions)))
            idx = sorted(rng.choice(len(questions), size=k, replace=False).tolist())
            out += [Sample(questions[i], cond) for i in idx]
    return out


def epoch_order(n: int, seed: int, phase: int, epoch: int) -> list[int]:
    """The shuffled order of epoch `epoch` of phase `phase` (a pure function of its arguments)."""
    return np.random.default_rng([seed, phase, epoch]).permutation(n).tolist()


class FrameCache:
    """Sampled frames per (video, condition), kept in memory (bounded, least recently used dropped)."""

    def __init__(self, videos_root: str | Path, spec, max_items: int = 4096):
        self.root, self.spec, self.max_items = Path(videos_root), spec, max_items
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, video: str, condition: str):
        from cuelab.video.io import find_video, sample_frames

        key = (video, condition)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        folder = self.root / condition
        if not folder.is_dir():
            raise DataError(f"no rendered videos for condition {condition!r}", file=str(folder), video_id=video)
        frames = sample_frames(find_video(folder, video), self.spec, video_id=video)
        with self._lock:
            self._items[key] = frames
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return frames


class SampleEncoder:
    """Sample -> processor inputs with labels (THE prompt builder); bad videos reported and skipped."""

    def __init__(self, processor, frames: FrameCache, spec: PromptSpec | None = None,
                 errors_path: str | Path | None = None):
        self.processor, self.frames = processor, frames
        self.spec = spec or PromptSpec()  # the prompt and training target (cuelab.model.prompt.prompt_spec)
        self.errors_path = Path(errors_path) if errors_path else None
        self.bad: set = set()
        self._lock = threading.Lock()  # encoder threads share the bad-video set and the error file

    def __call__(self, sample: Sample) -> dict | None:
        q = sample.question
        key = (q["video"], sample.condition)
        if key in self.bad:
            return None
        try:
            frames = self.frames.get(q["video"], sample.condition)
        except DataError as e:
            with self._lock:
                if key not in self.bad and self.errors_path is not None:
                    append_jsonl(self.errors_path, [{**e.as_record(), "condition": sample.condition,
                                                     "stage": "train"}])
                self.bad.add(key)
            return None
        return build_inputs(self.processor, q, frames, answer=q["answer"], spec=self.spec)


def collate(items: list[dict], pad_id: int) -> dict:
    """Right-pad a list of build_inputs outputs into one batch: input_ids with `pad_id`, attention_mask and
    mm_token_type_ids (where the family has it) with 0, labels with -100; video pixel inputs (Qwen3-VL: patches
    and grids) concatenated in batch order."""
    import torch

    n = max(it["input_ids"].shape[1] for it in items)

    def pad(key, value):
        rows = []
        for it in items:
            x = it[key][0]
            rows.append(torch.cat([x, x.new_full((n - x.shape[0],), value)]))
        return torch.stack(rows)

    fill = {"input_ids": pad_id, "attention_mask": 0, "mm_token_type_ids": 0, "labels": IGNORE_INDEX}
    batch = {key: pad(key, value) for key, value in fill.items() if key in items[0]}
    # the rest is the videos' pixel inputs (their names are the model family's): concatenated in batch order
    for key in dict.fromkeys(k for it in items for k in it if k not in fill and isinstance(it[k], torch.Tensor)):
        batch[key] = torch.cat([it[key] for it in items if key in it])
    return batch


def batches(samples: list[Sample], order: list[int], start: int, batch_size: int, encoder: SampleEncoder,
            pad_id: int, rank: int = 0, world: int = 1, workers: int = 0) -> Iterator[tuple[int, dict | None]]:
    """Yield (position after the batch's round, batch) from micro-batch position `start` of `order`. Micro-batch
    g holds order[g*B:(g+1)*B] and goes to rank g % world; micro-batches are taken in rounds of `world` (one
    each), so the position after g is the end of its round: every rank resumes where the whole step ended. Unreadable samples are dropped from their batch
    (None when nothing is left). `workers` threads encode samples ahead, in order (same result either way)."""
    n_batches = len(order) // batch_size  # an incomplete last batch is dropped: every step has B samples
    mine = [g for g in range(start, n_batches) if g % world == rank]
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    try:
        def encode_batch(g):
            return [encoder(samples[i]) for i in order[g * batch_size:(g + 1) * batch_size]]

        if pool is None:
            results = (encode_batch(g) for g in mine)
        else:
            results = _ordered_prefetch(pool, encode_batch, mine, ahead=2)
        for g, items in zip(mine, results):
            items = [it for it in items if it is not None]
            yield (g // world + 1) * world, (collate(items, pad_id) if items else None)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _ordered_prefetch(pool, fn, keys, ahead: int):
    futures = []
    keys = list(keys)
    for k in keys[:ahead]:
        futures.append(pool.submit(fn, k))
    for i in range(len(keys)):
        if i + ahead < len(keys):
            futures.append(pool.submit(fn, keys[i + ahead]))
        yield futures[i].result()
        futures[i] = None
