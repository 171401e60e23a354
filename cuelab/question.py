"""Questions: one record type and the one loader every stage reads a questions file with (training, eval,
attention, the CLI's checks).

A questions file is JSONL, one object per line (`cuelab questions`, `cuelab first-study`). Two kinds of defect:

- file defects refuse the whole file (a DataError naming the file, line, question, video and field): a line that
  is not an object, an id or video that is missing or cannot name a file (ids and videos become parts of file
  names: predictions, attention rows, overlays), an id that appears twice. Such a file was not written by
  cuelab, and a rewritten or skipped record could silently mix two questions' files.
- content defects (the question text; the choices, a list of at least 2 non-empty strings; answer_index, an index
  into them; for training the answer text, one of the choices): `strict` loading (training) refuses the file
  the same way. Lenient loading (eval, attention) keeps the question with `problem` set, so that one bad question
  never stops a run: eval records it as a failed prediction with that text, attention reports it when its prompt
  cannot be built.

Stdlib only (the vLLM worker imports it from its own venv).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cuelab.errors import DataError
from cuelab.fsutil import read_jsonl, safe_name


@dataclass(frozen=True)
class Question:
    """One multiple-choice question. `record` is the line as read, kept verbatim: the prompt builder
    (cuelab.model.prompt) and prediction lines (cuelab.evaluate.predictions.record) take it."""

    id: str | int  # as in the file: a whole-number id stays a number in prediction lines
    video: str | int
    question: str | None  # None, like the fields below, only when `problem` says why
    choices: tuple[str, ...]
    answer_index: int | None
    kind: str | None = None
    answer: str | None = None  # the answer text (training's target)
    hint: str | None = None
    target_object: str | None = None  # the Something-Else object the question is about (attention)
    split: str | None = None
    verb: str | None = None
    problem: str | None = None  # why it cannot be scored ("field 'choices': ..."); None when it can
    record: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_objects(self) -> int | None:
        return object_count(self.record)

    @classmethod
    def from_record(cls, rec: dict, file: str | Path, line: int | None = None, strict: bool = True) -> Question:
        """The question of one record. File defects always raise; content defects raise when `strict`, else
        they are kept in `problem`."""
        check_names(rec, file, line)
        defect = content_defect(rec)
        if strict and defect is None:
            defect = answer_defect(rec)
        if strict and defect is not None:
            _refuse(rec, file, line, *defect)
        usable = defect is None
        target = rec.get("target_object")
        return cls(id=rec["id"], video=rec["video"], question=rec["question"] if usable else None,
                   choices=tuple(rec["choices"]) if usable else (),
                   answer_index=rec["answer_index"] if usable else None, kind=rec.get("kind"),
                   answer=rec.get("answer"), hint=rec.get("hint"),
                   target_object=None if target in (None, "") else str(target), split=rec.get("split"),
                   verb=rec.get("verb"), problem=None if usable else f"field {defect[0]!r}: {defect[1]}", record=rec)


def load_questions(path: str | Path, *, strict: bool = True) -> list[Question]:
    """Every question of a JSONL questions file, in file order. File defects (and, when `strict`, content
    defects) raise a DataError naming the file, the line, the question, its video and the field."""
    path = Path(path)
    if not path.is_file():
        raise DataError("questions file not found", file=str(path))
    out, seen = [], set()
    for n, rec in enumerate(read_jsonl(path), 1):
        q = Question.from_record(rec, path, n, strict=strict)
        if str(q.id) in seen:  # "7" and 7 name the same files
            raise DataError(f"line {n}: question id {q.id!r} appears twice", file=str(path),
                            video_id=str(q.video), field="id")
        seen.add(str(q.id))
        out.append(q)
    return out


def check_names(rec: Any, file: str | Path, line: int | None = None) -> None:
    """A question's id and video become parts of file names (attention rows, overlays, rendered videos), so a
    path-like one (`/../../x`) is refused when the file is read, naming the file, the question and the field."""
    where = f"line {line}: " if line is not None else ""
    if not isinstance(rec, dict):
        raise DataError(f"{where}a question must be a JSON object, not {type(rec).__name__}", file=str(file))
    for key in ("id", "video"):
        if key not in rec:
            raise DataError(f"{where}question {rec.get('id')!r} lacks a field", file=str(file),
                            video_id=rec.get("video"), field=key)
        if not isinstance(rec[key], (str, int)) or isinstance(rec[key], bool):
            raise DataError(f"{where}question {rec['id']!r}: {key} must be text or a whole number", file=str(file),
                            video_id=str(rec.get("video")), field=key)
    qid, vid = str(rec["id"]), str(rec["video"])
    safe_name(qid, what=f"{where}question id", file=str(file), video_id=vid, field="id")
    safe_name(vid, what=f"{where}question {qid!r}: video id", file=str(file), video_id=vid, field="video")


def content_defect(rec: dict) -> tuple[str, str] | None:
    """(field, why) of the first defect that keeps a question from being scored, or None. The order and the
    words are those of the failed prediction lines eval has always written."""
    ch = rec.get("choices")
    if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) and c for c in ch):
        return "choices", "must be a list of at least 2 non-empty strings"
    if not isinstance(rec.get("answer_index"), int) or not 0 <= rec["answer_index"] < len(ch):
        return "answer_index", "not an index into choices"
    if not isinstance(rec.get("question"), str):
        return "question", "missing"
    return None


def answer_defect(rec: dict) -> tuple[str, str] | None:
    """What training needs besides a scorable question: the answer text, one of the choices."""
    if "answer" not in rec or rec["answer"] not in rec["choices"]:
        return "answer", "the answer is not one of the choices"
    return None


def _refuse(rec: dict, file, line, key: str, why: str) -> None:
    where = f"line {line}: " if line is not None else ""
    if key not in rec:
        why = "lacks a field"
    elif key == "question":  # eval's words ("missing") also cover a question that is there but not text
        why = "must be text"
    raise DataError(f"{where}question {rec['id']!r}: {why}", file=str(file), video_id=str(rec["video"]), field=key)


def object_count(record: dict) -> int | None:
    """Objects in the question's scene (hand excluded): `n_objects` if given, else one cue colour per object."""
    if record.get("n_objects") is not None:
        return int(record["n_objects"])
    if record.get("cue_colors") is not None:
        return len(record["cue_colors"])
    return None
