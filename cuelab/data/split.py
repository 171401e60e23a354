"""Seeded subset and train/test split by video (stratified by template), balanced answer positions, and the
counts, sanity checks and hashes that go into manifest.json."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import numpy as np

from cuelab.data.normalize import BLANK, in_question, normalize, overlaps, words
from cuelab.digest import stable_int  # noqa: F401 (here too: the question builders seed with it)
from cuelab.errors import DataError

N_CHOICES = 4


def stratified_pick(strata: dict[str, str], n: int, rng: np.random.Generator) -> set[str]:
    """n ids at random, each stratum getting its share of n (largest remainder, ties broken at random)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for vid, s in strata.items():
        groups[s].append(vid)
    total = len(strata)
    if n >= total:
        return set(strata)
    keys = sorted(groups)
    exact = np.array([n * len(groups[k]) / total for k in keys])
    quota = np.floor(exact).astype(int)
    left = n - int(quota.sum())
    # the strata with the largest remainders get one more; rng.random breaks ties between equal remainders
    order = sorted(range(len(keys)), key=lambda i: (-(exact[i] - quota[i]), rng.random()))
    for i in order[:left]:
        quota[i] += 1
    picked: set[str] = set()
    for k, q in zip(keys, quota):
        if q:
            members = sorted(groups[k])
            picked.update(members[j] for j in rng.choice(len(members), size=int(q), replace=False))
    return picked


def split_videos(strata: dict[str, str], videos: int | None, test_videos: int, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, test ids) in the input order. `videos` (None: all) are drawn first, then `test_videos` of
    them go to test; both draws keep each stratum's (template's) share."""
    if videos is not None and videos < 1:
        raise DataError(f"videos must be at least 1, got {videos}", field="questions.videos")
    if test_videos < 0:
        raise DataError(f"test_videos must be >= 0, got {test_videos}", field="questions.test_videos")
    rng = np.random.default_rng([seed, stable_int("split")])
    selected = stratified_pick(strata, videos, rng) if videos is not None else set(strata)
    if test_videos >= len(selected):
        raise DataError(f"test_videos={test_videos} leaves no training video: only {len(selected)} videos have "
                        "questions", field="questions.test_videos")
    test = stratified_pick({v: strata[v] for v in strata if v in selected}, test_videos, rng)
    ordered = [v for v in strata if v in selected]
    return [v for v in ordered if v not in test], [v for v in ordered if v in test]


def place_answers(rows: list[dict], seed: int) -> None:
    """Move each row's answer (choices[0] on entry) to a balanced slot, in place.

    Within each (split, kind) the slots come in shuffled blocks of four, so every slot gets the same share
    (to within one question) and a row's slot cannot be guessed from its neighbours."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["split"], r["kind"])].append(r)
    for (split, kind), members in groups.items():
        rng = np.random.default_rng([seed, stable_int("positions", split, kind)])
        blocks = -(-len(members) // N_CHOICES)
        slots = np.concatenate([rng.permutation(N_CHOICES) for _ in range(blocks)]) if blocks else []
        for r, slot in zip(members, slots):
            answer, others = r["choices"][0], r["choices"][1:]
            r["choices"] = others[:slot] + [answer] + others[slot:]
            r["answer_index"] = int(slot)


def sanity_counts(rows: list[dict]) -> dict[str, int]:
    """Problems a fair multiple-choice question must not have; every count is zero for built questions."""
    c = Counter({k: 0 for k in ("duplicate_choices", "answer_repeated", "answer_in_question", "overlapping_choices",
                                "answer_not_at_index", "not_one_blank", "not_four_choices")})
    for r in rows:
        choices, answer = r["choices"], r["answer"]
        keys = [normalize(x) for x in choices]
        c["duplicate_choices"] += len(set(keys)) < len(keys)
        c["answer_repeated"] += keys.count(normalize(answer)) > 1
        c["answer_in_question"] += in_question(r["question"], answer)
        toks = [words(x) for x in choices]
        c["overlapping_choices"] += any(overlaps(toks[i], toks[j]) for i in range(len(toks))
                                        for j in range(i + 1, len(toks)))
        idx = r.get("answer_index")
        c["answer_not_at_index"] += not (isinstance(idx, int) and 0 <= idx < len(choices) and choices[idx] == answer)
        c["not_one_blank"] += r["question"].count(BLANK) != 1
        c["not_four_choices"] += len(choices) != N_CHOICES
    return dict(c)


def summarize(train: list[dict], test: list[dict]) -> dict:
    """Counts per split, kind and verb, and the answer-position histogram."""
    out: dict = {"videos": {"train": len({r["video"] for r in train}), "test": len({r["video"] for r in test})},
                 "questions": {"train": len(train), "test": len(test)}}
    per_kind: dict = {}
    positions: dict = {}
    for name, rows in (("train", train), ("test", test)):
        per_kind[name] = dict(sorted(Counter(r["kind"] for r in rows).items()))
        hist: dict[str, list[int]] = {}
        for r in rows:
            hist.setdefault(r["kind"], [0] * N_CHOICES)[r["answer_index"]] += 1
        positions[name] = dict(sorted(hist.items()))
    allpos = [0] * N_CHOICES
    for r in train + test:
        allpos[r["answer_index"]] += 1
    total = max(1, sum(allpos))
    per_verb: dict[str, dict[str, int]] = {}
    for r in train + test:
        per_verb.setdefault(r["kind"], Counter())[r["verb"] or "(none)"] += 1
    out["per_kind"] = per_kind
    out["per_verb"] = {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in sorted(per_verb.items())}
    out["answer_positions"] = {"all": allpos, "share": [round(n / total, 4) for n in allpos], **positions}
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
