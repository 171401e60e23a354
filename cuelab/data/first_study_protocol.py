"""The first study's question protocol (github 4g/visual_cues, `annotate.py`: `prepare_labels` and
`prepare_training_json`), rebuilt as cuelab question records so every later stage reads them.

What the study did, step by step, and what this module does the same way:
- label pool: train.json, then validation.json; an entry is kept when its id is among the first 10,000
  Something-Else annotation ids in string order (`annotation_ids`; None keeps every id). Entries are keyed by
  id: a repeated id keeps its first position and its last entry (a dict filled in file order).
- template filter: every slot is `[something]`; the verb is the first word of the lower-cased template
  (with "something" removed) ending in "ing"; every occurrence of that word becomes `[doing]`.
- questions: one per placeholder (kind "object") and one for the verb (kind "verb"), the others filled in,
  the asked one replaced by `_____` wherever it occurs; lower case as the template was, no full stop.
- choices: the answer plus three draws WITH replacement from the global object / verb pool (built from
  every filtered video of both splits), shuffled. Duplicates are kept, as the study had them.
- split: the first `test_videos` (1,000) filtered videos in pool order are the test set, the rest train.

The one departure: the study drew from Python sets with the global `random`, so its distractors changed
from run to run; here the pools are sorted and each video has its own seeded `random.Random`, so the same
labels and seed give the same file. Everything but the distractors matches the study's output exactly
(tests/test_first_study_protocol.py checks it on the real SSv2 labels).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from cuelab.data.normalize import BLANK, in_question, normalize
from cuelab.data.questions import RECORD_KEYS
from cuelab.data.split import sanity_counts, stable_int, summarize
from cuelab.data.ssv2 import LabelEntry, parse_label_entry
from cuelab.errors import DataError
from cuelab.fsutil import load_json

POOL_IDS = 10_000
TEST_VIDEOS = 1_000
N_CHOICES = 4
_SLOT = re.compile(r"\[(.*?)\]")  # the study's slot pattern


# ------------------------------------------------------------------------------------------------------------
# Label pool
# ------------------------------------------------------------------------------------------------------------

def label_pool(label_lists: Sequence[Sequence[LabelEntry]], annotation_ids: Iterable[str] | None = None,
               first_ids: int = POOL_IDS) -> list[LabelEntry]:
    """The study's `prepare_labels`: entries of the label lists (train first, then validation) whose id is among
    the first `first_ids` annotation ids in string order; `annotation_ids=None` keeps every id.
    A repeated id keeps its first position and its last entry."""
    keep = None if annotation_ids is None else set(sorted(str(i) for i in annotation_ids)[:first_ids])
    pool: dict[str, LabelEntry] = {}
    for entries in label_lists:
        for e in entries:
            if keep is None or e.id in keep:
                pool[e.id] = e
    return list(pool.values())


def read_label_pool(label_paths: Sequence[str | Path], annotations_path: str | Path | None = None,
                    first_ids: int = POOL_IDS) -> tuple[list[LabelEntry], dict]:
    """Label files (train.json, validation.json, in that order) and, optionally, a Something-Else annotation
    file whose ids bound the pool. A bad label entry is reported and skipped. Returns (pool, report)."""
    lists, errors = [], []
    for path in label_paths:
        data = load_json(path)
        if not isinstance(data, list):
            raise DataError(f"expected a JSON list of label entries, got {type(data).__name__}", file=str(path))
        entries = []
        for i, raw in enumerate(data):
            try:
                entries.append(parse_label_entry(raw, file=str(path), index=i))
            except DataError as e:
                errors.append(e.as_record())
        lists.append(entries)
    ids = None
    if annotations_path is not None:
        ann = load_json(annotations_path)
        if not isinstance(ann, dict):
            raise DataError(f"expected an object video_id -> entries, got {type(ann).__name__}",
                            file=str(annotations_path))
        ids = list(ann)
    pool = label_pool(lists, ids, first_ids)
    report = {"labels": [str(p) for p in label_paths], "label_entries": sum(len(x) for x in lists),
              "label_errors": len(errors), "errors": errors[:50],
              "annotations": None if annotations_path is None else str(annotations_path),
              "annotation_ids": None if ids is None else len(ids),
              "first_ids": None if ids is None else first_ids, "pool": len(pool)}
    return pool, report


# ------------------------------------------------------------------------------------------------------------
# Templates and questions
# ------------------------------------------------------------------------------------------------------------

def study_template(template: str) -> tuple[str, str] | None:
    """(lower-cased template with its verb word replaced by `[doing]`, the verb), or None when the study left
    the template out: a slot other than `[something]` (or no slot), or no word ending in "ing".
    The replacement is a plain substring replace of every occurrence, as the study's was."""
    low = template.lower()
    if set(_SLOT.findall(low)) != {"something"}:
        return None
    for word in low.replace("something", "").split():
        if word[-3:] == "ing":
            return low.replace(word, "[doing]"), word
    return None


def blanked(doing_template: str, placeholders: Sequence[str], verb: str) -> list[tuple[str, str, str]]:
    """(kind, answer, question) for each placeholder, then the verb: the others filled in, the asked one
    replaced by the blank wherever it occurs (the study's numbered-slot string replacement)."""
    text = doing_template
    for i in range(len(placeholders)):
        text = text.replace("[something]", f"[something{i}]", 1)
    fills = {f"[something{i}]": p for i, p in enumerate(placeholders)}
    fills["[doing]"] = verb
    out = []
    for key, answer in fills.items():
        q = text
        for other, value in fills.items():
            if other != key:
                q = q.replace(other, value)
        out.append(("object" if "something" in key else "verb", answer, q.replace(key, BLANK)))
    return out


def draw_choices(answer: str, pool: Sequence[str], rng: random.Random) -> list[str]:
    """The answer and three uniform draws with replacement from the pool, shuffled (duplicates kept)."""
    choices = [answer] + [rng.choice(pool) for _ in range(N_CHOICES - 1)]
    rng.shuffle(choices)
    return choices


def choice_flags(question: str, answer: str, choices: list[str]) -> list[str]:
    """What makes a row unlike a fair four-way question, by the same rules as the study's converted test set
    (cuelab.data.first_study): choices equal after normalising, the answer among them more than once, the answer
    written in the question, and a question with other than one blank."""
    keys = [normalize(c) for c in choices]
    flags = []
    if len(set(keys)) < len(keys):
        flags.append("duplicate_choices")
    if keys.count(normalize(answer)) > 1:
        flags.append("answer_repeated")
    if in_question(question, answer):
        flags.append("answer_in_question")
    blanks = question.count(BLANK)
    if blanks > 1:
        flags.append("two_blanks")
    elif blanks == 0:
        flags.append("no_blank")
    return flags


def _record(entry: LabelEntry, verb: str, kind: str, k: int, question: str, answer: str,
            choices: list[str], split: str) -> dict:
    rec = {"id": f"{entry.id}-{kind}-{k}", "video": entry.id, "kind": kind, "question": question,
           "choices": choices, "answer": answer, "answer_index": choices.index(answer), "template": entry.template,
           "verb": verb, "label": entry.label,
           # Something-Else's object k is the label's placeholder k; a verb question is about the first (acted-on)
           # object. The study did not record it; attention needs it to find the asked object's boxes.
           "target_object": str(k) if kind == "object" else "0", "cue_colors": {}, "hint": "", "split": split,
           "flags": choice_flags(question, answer, choices)}
    assert tuple(rec) == RECORD_KEYS
    return rec


# ------------------------------------------------------------------------------------------------------------
# The whole set
# ------------------------------------------------------------------------------------------------------------

def filter_pool(pool: Sequence[LabelEntry]) -> tuple[list[tuple[LabelEntry, str, str]], Counter]:
    """The videos the study kept, in pool order, with (doing template, verb); and why the others were left out."""
    kept, drops = [], Counter()
    for e in pool:
        if set(_SLOT.findall(e.template.lower())) != {"something"}:
            drops["slot_not_something"] += 1
            continue
        parsed = study_template(e.template)
        if parsed is None:
            drops["no_ing_word"] += 1
            continue
        kept.append((e, *parsed))
    return kept, drops


def build_first_study_questions(pool: Sequence[LabelEntry], seed: int, test_videos: int = TEST_VIDEOS
                                ) -> tuple[list[dict], list[dict], dict]:
    """The study's questions for a label pool: (train rows, test rows, manifest without file hashes)."""
    if test_videos < 0:
        raise DataError(f"test_videos must be >= 0, got {test_videos}", field="questions.test_videos")
    kept, drops = filter_pool(pool)
    if not kept:
        raise DataError(f"no label entry passes the study's template filter (left out: {dict(drops)})",
                        field="labels")
    objects = sorted({p for e, _, _ in kept for p in e.placeholders})
    verbs = sorted({v for _, _, v in kept})
    pools = {"object": objects, "verb": verbs}
    train, test = [], []
    for n, (entry, doing, verb) in enumerate(kept):
        split = "test" if n < test_videos else "train"
        rng = random.Random(stable_int("first-study questions", seed, entry.id))
        slot = 0
        for kind, answer, question in blanked(doing, entry.placeholders, verb):
            k = slot if kind == "object" else 0
            slot += kind == "object"
            choices = draw_choices(answer, pools[kind], rng)
            (test if split == "test" else train).append(
                _record(entry, verb, kind, k, question, answer, choices, split))
    rows = train + test
    manifest = {
        "protocol": "first-study",
        "config": {"seed": seed, "test_videos": test_videos},
        "videos": {"pool": len(pool), "kept": len(kept), "train": len({r["video"] for r in train}),
                   "test": len({r["video"] for r in test})},
        **{k: v for k, v in summarize(train, test).items() if k != "videos"},
        "dropped": {"videos": dict(sorted(drops.items()))},
        "choice_pools": {"object": len(objects), "verb": len(verbs)},
        "flags": dict(sorted(Counter(f for r in rows for f in r["flags"]).items())),
        "sanity": sanity_counts(rows),  # the study's rules, not cuelab's: these counts are expected to be > 0
    }
    return train, test, manifest
