"""Prediction files: `predictions/<model>__<condition>.jsonl`, one line per question, appended as made.

A run killed mid-write leaves at most one partial last line: opening the file again cuts it off, and the ids
already there are skipped, so a rerun ends with every question scored exactly once. Stdlib only
here (the vLLM worker imports it from its own venv).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from cuelab.errors import DataError
from cuelab.fsutil import append_jsonl, read_jsonl, repair_partial_line, safe_name

BLIND = "blind"


def condition_name(condition: str, blind: bool = False, hint: bool = False) -> str:
    """The condition as recorded: the rendered condition, `blind` (no video), `+hint` for the hint prompt."""
    name = BLIND if blind else condition
    return f"{name}+hint" if hint else name


def predictions_path(out_dir: str | Path, model: str, condition: str, shard: tuple[int, int] = (0, 1)) -> Path:
    """out_dir/predictions/<model>__<condition>.jsonl (with `.shard<i>of<n>` before .jsonl for a shard)."""
    stem = f"{safe_name(model, what='model', field='model')}__{safe_name(condition, what='condition')}"
    i, n = shard
    if n > 1:
        stem += f".shard{i}of{n}"
    return Path(out_dir) / "predictions" / f"{stem}.jsonl"


def read_predictions(path: str | Path) -> list[dict]:
    """The records of one prediction file, first occurrence of each question id (a partial last line is
    ignored; any other malformed line is a DataError naming the file and line)."""
    seen, out = set(), []
    for rec in read_jsonl(path, skip_partial=True):
        qid = rec.get("question_id")
        if qid is None:
            raise DataError("prediction line without question_id", file=str(path), field="question_id")
        if qid not in seen:
            seen.add(qid)
            out.append(rec)
    return out


class PredictionFile:
    """One (model, condition) prediction file opened for resuming: `done` holds the scored question ids."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        repair_partial_line(self.path)
        self.done: set[str] = {r["question_id"] for r in read_predictions(self.path)} if self.path.is_file() else set()

    def todo(self, questions: list) -> list:
        """The questions (cuelab.question.Question, or records) whose id this file does not hold yet."""
        return [q for q in questions if (q["id"] if isinstance(q, dict) else q.id) not in self.done]

    def append(self, records: list[dict]) -> None:
        records = [r for r in records if r["question_id"] not in self.done]
        if records:
            append_jsonl(self.path, records)
            self.done.update(r["question_id"] for r in records)


def prompt_ids_sha(ids) -> str:
    """A short fingerprint of a prompt's token ids (both backends record it, to compare their prompts)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]


def agreement(a: list[dict], b: list[dict], key: str = "greedy_index", tol: float = 1e-3) -> dict:
    """Compare two backends' records of the same questions: answers (`key`), prompt fingerprints and
    first-answer-token log-probs (tokens in both top lists). Disagreements are listed."""
    by_id = {r["question_id"]: r for r in b if not r.get("failed")}
    rows = [(r, by_id[r["question_id"]]) for r in a if not r.get("failed") and r["question_id"] in by_id]
    dis = [{"question_id": x["question_id"], "a": x.get(key), "b": y.get(key), "scores_a": x.get("scores"),
            "scores_b": y.get("scores")} for x, y in rows if x.get(key) != y.get(key)]
    prompt_diff = [x["question_id"] for x, y in rows if x.get("prompt_ids_sha") != y.get("prompt_ids_sha")]
    lp = [abs(x["first_logprobs"][t] - y["first_logprobs"][t]) for x, y in rows
          for t in set(x.get("first_logprobs") or {}) & set(y.get("first_logprobs") or {})]
    n = len(rows)
    return {"n": n, "agree": n - len(dis), "rate": (n - len(dis)) / n if n else float("nan"),
            "disagreements": dis, "prompt_mismatches": prompt_diff, "logprob_pairs": len(lp),
            "max_logprob_diff": max(lp) if lp else None,
            "logprobs_within_tol": bool(lp) and max(lp) <= tol}


def distinct_choices(choices: list[str]) -> tuple[list[str], list[int]]:
    """A choice string that appears twice is one answer (the first study's questions repeat some): the distinct
    strings in first-appearance order, and for each choice the position of its string among them. Backends score
    the distinct strings; `expand` gives each choice its string's value."""
    distinct = list(dict.fromkeys(choices))
    return distinct, [distinct.index(c) for c in choices]


def expand(values: list | None, back: list[int]) -> list | None:
    """Per-distinct-string values -> per-choice values (`back` from distinct_choices)."""
    return [values[j] for j in back] if values is not None else None


def match_choice(text: str, choices: list[str]) -> int:
    """Generated text scored by exact match after stripping: the first position of that choice string, -1 when
    it is no choice (counted wrong, not failed)."""
    text = text.strip()
    return choices.index(text) if text in choices else -1


def sample_seed(base: int, question_id) -> int:
    """The seed of one question's sampled answer: `eval.sampling.seed` plus a stable offset from the question id,
    so a rerun, a resumed run and either backend draw each question with the same seed, whatever the order."""
    return int(base) + zlib.crc32(str(question_id).encode("utf-8"))


def is_correct(question: dict, choice_index: int | None) -> bool:
    """The picked choice's string equals the answer's (with a repeated choice string, either copy is right);
    a record without its choices compares positions."""
    ch, a = question.get("choices"), question.get("answer_index")
    if not isinstance(choice_index, int) or not isinstance(a, int) or choice_index < 0:
        return False
    if not isinstance(ch, list):
        return choice_index == a
    return bool(choice_index < len(ch) and 0 <= a < len(ch) and ch[choice_index] == ch[a])


def record(question: dict, model: str, condition: str, scores: list[float] | None = None,
           mean_scores: list[float] | None = None, choice_index: int | None = None, error: str | None = None,
           **extra) -> dict:
    """One prediction line (DESIGN.md): failed questions carry `failed` and `error` and no scores;
    `choice_index` -1 is a generated text that matched no choice (wrong, not failed)."""
    rec = {"question_id": question["id"], "model": model, "condition": condition,
           "choice_index": choice_index, "scores": scores, "mean_scores": mean_scores,
           "correct": is_correct(question, choice_index),
           "kind": question.get("kind"), "video": question.get("video")}
    if error is not None:
        rec.update(failed=True, error=error)
    rec.update(extra)
    return rec
