"""What every export reads from a run folder: its config, its test questions, the conditions it evaluated and
the rendered videos, as one table of rows (one per question and condition) that each format writes its own way.

The prompt text of a row is what cuelab's one prompt builder writes for the question (cuelab.model.prompt
.question_text under the run's `model.prompt` / `question_first` / hint settings), so a harness that shows it to a
model shows the text `cuelab eval` scored. Rows keep the order of questions/test.jsonl in every condition: a
harness that pairs conditions by row index (lmms-eval's `--baseline` matches samples by doc_id) pairs the same
question."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cuelab.config import ExperimentConfig, load_config
from cuelab.errors import DataError
from cuelab.evaluate.predictions import BLIND
from cuelab.model.prompt import PromptSpec, prompt_spec, question_text
from cuelab.question import Question, load_questions
from cuelab.run_layout import RunPaths

#: the marker every export folder holds; a folder without it is never replaced by an export
MARKER = "cuelab_export.json"


@dataclass(frozen=True)
class Row:
    """One question under one condition, as every format stores it (the Hugging Face card lists these fields)."""

    question_id: str
    video_id: str
    condition: str
    kind: str | None
    question: str
    choices: list[str]
    answer: str
    answer_index: int
    prompt: str  # the user text cuelab's prompt builder writes: question, choices one per line, instruction
    video: str | None  # the video's path relative to the export folder; None under `blind` (no video)
    template: str | None = None
    target_object: str | None = None
    cue_colors: str | None = None  # JSON {object id: colour name} of the scene's cue colours

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunBenchmark:
    """A run folder's test set as a benchmark: its questions under each exported condition."""

    run_dir: Path
    cfg: ExperimentConfig
    paths: RunPaths
    name: str
    questions: list[Question]
    conditions: list[str]
    spec: PromptSpec
    rows: dict[str, list[Row]] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path, conditions: list[str] | None = None, name: str | None = None) -> RunBenchmark:
        """The run's config, test questions and conditions (default: the evaluated ones, plus `blind` when the run
        asked without video); every rendered video a row needs must exist."""
        run_dir = Path(run_dir)
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise DataError("not a cuelab run folder (no config.yaml)", file=str(config))
        cfg = load_config(config)
        paths = RunPaths(run_dir)
        questions = load_questions(paths.questions / "test.jsonl", strict=False)
        for q in questions:
            if q.problem:
                raise DataError(f"question {q.id!r} cannot be exported: {q.problem}",
                                file=str(paths.questions / "test.jsonl"), video_id=str(q.video), field="question")
        bench = cls(run_dir, cfg, paths, benchmark_name(name or cfg.name), questions,
                    _conditions(cfg, paths, conditions), prompt_spec(cfg))
        bench.rows = {c: [bench.row(q, c) for q in questions] for c in bench.conditions}
        return bench

    def video_source(self, condition: str, video_id: str) -> Path:
        from cuelab.video.io import find_video

        try:
            return find_video(self.paths.videos / condition, video_id)
        except DataError as e:
            raise DataError(f"rendered video missing under {condition!r}: render it again (cuelab render) or "
                            f"leave the condition out (--conditions)", file=str(self.paths.videos / condition),
                            video_id=str(video_id), field="video") from e

    def row(self, q: Question, condition: str) -> Row:
        video = None
        if condition != BLIND:
            src = self.video_source(condition, str(q.video))
            video = f"videos/{condition}/{q.video}{src.suffix}"
        rec = q.record
        colors = rec.get("cue_colors")
        target = q.target_object
        return Row(question_id=str(q.id), video_id=str(q.video), condition=condition, kind=q.kind,
                   question=q.question, choices=[str(c) for c in q.choices],
                   answer=str(q.choices[q.answer_index]),  # what the harnesses score against
                   answer_index=int(q.answer_index), prompt=question_text(rec, self.spec), video=video,
                   template=rec.get("template"), target_object=target,
                   cue_colors=json.dumps(colors, sort_keys=True) if colors else None)

    def copy_videos(self, out: Path, progress: bool = True) -> int:
        """Every row's video into out/videos/<condition>/ (a hard link where the file system allows, else a copy);
        returns the count."""
        import sys

        from tqdm import tqdm

        todo = [(c, vid) for c, rows in self.rows.items()
                for vid in dict.fromkeys(r.video_id for r in rows if r.video is not None)]
        for condition, vid in tqdm(todo, desc="export videos", unit="video", disable=not progress, file=sys.stderr):
            src = self.video_source(condition, vid)
            place_file(src, out / "videos" / condition / f"{vid}{src.suffix}")
        return len(todo)

    def summary(self, fmt: str, out: Path, **extra) -> dict:
        return {"format": fmt, "benchmark": self.name, "run": str(self.run_dir.resolve()), "out": str(out),
                "conditions": self.conditions, "questions": len(self.questions),
                "rows": {c: len(r) for c, r in self.rows.items()}, **extra}


def benchmark_name(name: str) -> str:
    """A run name as a task / config name: lower case, letters, digits and underscores ("demo-quick" ->
    "demo_quick"), never empty."""
    out = "".join(ch if ch.isalnum() else "_" for ch in str(name).lower()).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    if not out:
        raise DataError(f"benchmark name {name!r} has no letter or digit", field="--name")
    return out


def _conditions(cfg: ExperimentConfig, paths: RunPaths, wanted: list[str] | None) -> list[str]:
    evaluated = list(dict.fromkeys(c for c in cfg.eval.conditions if c != BLIND))
    if cfg.eval.blind or BLIND in cfg.eval.conditions:
        evaluated.append(BLIND)
    chosen = list(dict.fromkeys(wanted)) if wanted else evaluated
    if not chosen:
        raise DataError("no condition to export", field="--conditions")
    for c in chosen:
        if c != BLIND and not (paths.videos / c).is_dir():
            raise DataError(f"condition {c!r} has no rendered videos (known: {', '.join(evaluated)})",
                            file=str(paths.videos / c), field="--conditions")
    return chosen


def place_file(src: Path, dst: Path) -> None:
    """dst becomes a hard link to src, or a copy where linking is refused (another file system); written under a
    temp name first, so a killed export never leaves a partial video behind its final name."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
