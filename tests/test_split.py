"""Seeded subset and split by video, balanced answer slots, and the sanity counts of the manifest."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cuelab.data.split import place_answers, sanity_counts, split_videos, stratified_pick, summarize
from cuelab.errors import DataError


def _strata(sizes: dict[str, int]) -> dict[str, str]:
    return {f"{t}{i}": t for t, n in sizes.items() for i in range(n)}


def test_stratified_pick_keeps_each_stratum_share():
    strata = _strata({"a": 60, "b": 30, "c": 10})
    picked = stratified_pick(strata, 10, np.random.default_rng(0))
    assert Counter(strata[v] for v in picked) == {"a": 6, "b": 3, "c": 1}
    assert stratified_pick(strata, 500, np.random.default_rng(0)) == set(strata)


def test_split_is_by_video_seeded_and_stratified():
    strata = _strata({"push": 40, "pull": 40, "drop": 20})
    train, test = split_videos(strata, None, 20, seed=1)
    assert len(test) == 20 and len(train) == 80 and not set(train) & set(test)
    assert Counter(strata[v] for v in test) == {"push": 8, "pull": 8, "drop": 4}
    assert split_videos(strata, None, 20, seed=1) == (train, test)
    assert split_videos(strata, None, 20, seed=2)[1] != test
    # the subset is drawn first (stratified), then split
    train, test = split_videos(strata, 50, 10, seed=1)
    assert len(train) + len(test) == 50 and Counter(strata[v] for v in train + test) == {"push": 20, "pull": 20,
                                                                                         "drop": 10}
    assert list(strata).index(train[0]) < list(strata).index(train[-1])  # input order kept


@pytest.mark.parametrize("videos, test_videos", [(None, 100), (10, 10), (0, 1), (None, -1)])
def test_split_refuses_impossible_sizes(videos, test_videos):
    with pytest.raises(DataError):
        split_videos(_strata({"a": 60, "b": 40}), videos, test_videos, seed=0)


def _row(i, split="train", kind="object"):
    return {"id": str(i), "video": str(i // 2), "kind": kind, "split": split, "question": "Pushing _____ away.",
            "choices": [f"answer{i}", "x", "y", "z"], "answer": f"answer{i}", "answer_index": 0, "verb": "pushing"}


def test_answer_slots_are_balanced_and_choices_kept():
    rows = [_row(i, split="train" if i % 3 else "test", kind="verb" if i % 2 else "object") for i in range(1001)]
    place_answers(rows, seed=0)
    for group in {(r["split"], r["kind"]) for r in rows}:
        counts = Counter(r["answer_index"] for r in rows if (r["split"], r["kind"]) == group)
        assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1
    for r in rows:
        assert r["choices"][r["answer_index"]] == r["answer"]
        assert [c for c in r["choices"] if c != r["answer"]] == ["x", "y", "z"]
    # not a fixed cycle: consecutive rows of a group do not repeat one pattern
    seq = [r["answer_index"] for r in rows if (r["split"], r["kind"]) == ("train", "verb")][:40]
    assert len({tuple(seq[i:i + 4]) for i in range(0, 40, 4)}) > 1


@pytest.mark.parametrize("change, problem", [
    (dict(choices=["speaker", "the speaker", "cup", "key"], answer="cup", answer_index=2), "duplicate_choices"),
    (dict(choices=["speaker", "Speakers", "cup", "key"], answer="speaker", answer_index=0), "answer_repeated"),
    (dict(question="Pushing _____ into the cup.", choices=["pen", "cup", "key", "box"], answer="cup",
          answer_index=1), "answer_in_question"),
    (dict(choices=["cup", "coffee cup", "key", "box"], answer="cup", answer_index=0), "overlapping_choices"),
    (dict(choices=["cup", "pen", "key", "box"], answer="cup", answer_index=2), "answer_not_at_index"),
    (dict(question="Pushing _____ into _____."), "not_one_blank"),
    (dict(choices=["cup", "pen", "key"], answer="cup", answer_index=0), "not_four_choices"),
])
def test_sanity_counts_catch_each_problem(change, problem):
    good = {"question": "Pushing _____ away.", "choices": ["cup", "pen", "key", "box"], "answer": "cup",
            "answer_index": 0}
    assert not any(sanity_counts([good]).values())
    counts = sanity_counts([{**good, **change}])
    assert counts[problem] == 1


def test_summary_counts():
    train = [_row(i) for i in range(8)]
    test = [_row(i, split="test", kind="verb") for i in range(8, 12)]
    place_answers(train + test, seed=0)
    s = summarize(train, test)
    assert s["questions"] == {"train": 8, "test": 4} and s["videos"] == {"train": 4, "test": 2}
    assert s["per_kind"] == {"train": {"object": 8}, "test": {"verb": 4}}
    assert s["answer_positions"]["all"] == [3, 3, 3, 3] and s["answer_positions"]["share"] == [0.25] * 4
    assert s["per_verb"] == {"object": {"pushing": 8}, "verb": {"pushing": 4}}
