"""The first study's published question files (`qwen_format_test.json`) as cuelab questions, kept exactly as
they were, so that the same test set can be evaluated again. Their known faults are flagged, not fixed:
`duplicate_choices` (choices equal after normalisation), `answer_repeated` (the answer more than once) and
`answer_in_question`.

Input: a JSON list of `{"video", "conversations", "metadata": {"question", "choices", "answer", "type",
"video"}}`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cuelab.data.normalize import in_question, normalize
from cuelab.data.questions import RECORD_KEYS
from cuelab.data.split import sanity_counts
from cuelab.errors import DataError
from cuelab.fsutil import check_video_id, load_json

_LETTERS = "ABCD"


def _kind(raw_type: str) -> str | None:
    t = raw_type.strip().lower()
    if "verb" in t or "action" in t:
        return "verb"
    if "refer" in t:
        return "referential"
    if any(w in t for w in ("object", "noun", "something", "placeholder")):
        return "object"
    return None


def _answer_index(answer: str, choices: list[str]) -> int | None:
    """The answer's position: the same string, else the same normalised text, else a letter A-D."""
    if answer in choices:
        return choices.index(answer)
    keys = [normalize(c) for c in choices]
    if normalize(answer) in keys and normalize(answer):
        return keys.index(normalize(answer))
    letter = answer.strip().strip("().:").upper()
    if len(letter) == 1 and letter in _LETTERS[:len(choices)]:
        return _LETTERS.index(letter)
    return None


def _assistant_answer(conversations) -> str | None:
    if isinstance(conversations, list):
        for turn in reversed(conversations):
            if isinstance(turn, dict) and turn.get("from", turn.get("role")) in ("gpt", "assistant"):
                value = turn.get("value", turn.get("content"))
                return value.strip() if isinstance(value, str) else None
    return None


def convert_record(raw: object, *, file: str, index: int, counters: Counter) -> dict:
    """One first-study record -> one cuelab question record (split "test"). Raises DataError."""
    if not isinstance(raw, dict):
        raise DataError(f"record {index} is {type(raw).__name__}, expected an object", file=file)
    meta = raw.get("metadata")
    video = str(raw.get("video") or (meta or {}).get("video") or "")
    if not isinstance(meta, dict):
        raise DataError(f"record {index} has no 'metadata' object", file=file, video_id=video or None,
                        field="metadata")
    video = Path(str(meta.get("video") or video)).name.split(".")[0]
    if not video:
        raise DataError(f"record {index} names no video", file=file, field="video")
    check_video_id(video, file=file)
    question, choices, raw_type = meta.get("question"), meta.get("choices"), meta.get("type")
    if not isinstance(question, str):
        raise DataError(f"record {index}: question must be a string", file=file, video_id=video, field="question")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise DataError(f"record {index}: choices must be a list of strings", file=file, video_id=video,
                        field="choices")
    kind = _kind(str(raw_type or ""))
    if kind is None:
        raise DataError(f"record {index}: unknown question type {raw_type!r}", file=file, video_id=video,
                        field="type")
    answer = meta.get("answer")
    if not isinstance(answer, str):
        answer = _assistant_answer(raw.get("conversations"))
    if not isinstance(answer, str):
        raise DataError(f"record {index}: no answer", file=file, video_id=video, field="answer")
    idx = _answer_index(answer, choices)
    if idx is None:
        raise DataError(f"record {index}: answer {answer!r} is not one of the choices {choices}", file=file,
                        video_id=video, field="answer")
    answer = choices[idx]
    keys = [normalize(c) for c in choices]
    flags = []
    if len(set(keys)) < len(keys):
        flags.append("duplicate_choices")
    if keys.count(keys[idx]) > 1:
        flags.append("answer_repeated")
    if in_question(question, answer):
        flags.append("answer_in_question")
    if len(choices) != 4:
        flags.append("not_four_choices")
    k = counters[(video, kind)]
    counters[(video, kind)] += 1
    rec = {"id": f"{video}-{kind}-{k}", "video": video, "kind": kind, "question": question, "choices": list(choices),
           "answer": answer, "answer_index": idx, "template": str(meta.get("template", "")),
           "verb": str(meta.get("verb", "")), "label": str(meta.get("label", "")), "target_object": None,
           "cue_colors": {}, "hint": "", "split": "test", "flags": flags}
    assert tuple(rec) == RECORD_KEYS
    return rec


def convert_first_study(path: str | Path) -> tuple[list[dict], dict]:
    """All records of a first-study file -> (cuelab test rows, manifest). A bad record is reported in the
    manifest and skipped."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of records, got {type(data).__name__}", file=str(path))
    rows, errors = [], []
    counters: Counter = Counter()
    for i, raw in enumerate(data):
        try:
            rows.append(convert_record(raw, file=str(path), index=i, counters=counters))
        except DataError as e:
            errors.append(e.as_record())
    if not rows:
        raise DataError(f"no record could be converted ({len(errors)} errors; first: {errors[:1]})", file=str(path))
    flags = Counter(f for r in rows for f in r["flags"])
    manifest = {"source": {"first_study": str(path), "records": len(data)},
                "videos": {"test": len({r["video"] for r in rows})},
                "questions": {"train": 0, "test": len(rows)},
                "per_kind": {"test": dict(sorted(Counter(r["kind"] for r in rows).items()))},
                "flags": dict(sorted(flags.items())),
                "dropped": {"records": len(errors), "errors": errors[:50]},
                "sanity": sanity_counts(rows)}
    return rows, manifest
