"""What a dataset card says about an exported benchmark, written from the run itself: the schema of a row, where
the videos and boxes came from and under which licence, how each condition's cue was drawn (the render settings
and one rendered video's provenance sidecar), which questions, and the run's own accuracies as a baseline."""

from __future__ import annotations

import inspect
from pathlib import Path

from cuelab.evaluate.predictions import BLIND
from cuelab.export.source import RunBenchmark
from cuelab.fsutil import load_json
from cuelab.video.palette import HAND_COLOR, SLOT_COLORS

#: (field, type, meaning) of a row, in the order of cuelab.export.source.Row
FIELDS = [
    ("question_id", "string", "the question's id in the run's questions/test.jsonl (the same in every condition)"),
    ("video_id", "string", "the source video's id"),
    ("condition", "string", "the cue drawn on the video (`plain`: none; `blind`: the question asked without video)"),
    ("kind", "string", "object / verb / referential / referential_verb (what the blank asks for)"),
    ("question", "string", "the fill-in-the-blank sentence (one `_____`)"),
    ("choices", "list of string", "the 4 choices, distinct after normalising case, articles and plurals"),
    ("answer", "string", "the right choice"),
    ("answer_index", "int64", "its position in `choices`"),
    ("prompt", "string", "the user text cuelab's prompt builder writes (question, choices one per line, "
                         "instruction); the video goes before it in the user turn"),
    ("video", "string or null", "the cued video, relative to the dataset folder (null under `blind`)"),
    ("template", "string or null", "the SSv2-style template of the action (`Lifting [something]`)"),
    ("target_object", "string or null", "the annotated object the question is about (`0`, `1`, ...)"),
    ("cue_colors", "string or null", "JSON {object id: colour name}: the colour each object's cue is drawn in"),
]

#: cues whose class has no docstring of its own, described here (others: their class docstring)
CUE_TEXT = {
    "plain": "no cue: the frames unchanged, still decoded and re-encoded like every condition (the codec is "
             "controlled).",
    "box": "a rectangle around each annotated object on every frame where it has a box, in the object's slot "
           "colour.",
    "trajectory": "each object's path so far: its box centres up to the current frame joined by a line, a dot "
                  "on the current centre, in the object's slot colour.",
    "box_trajectory": "the box and the trajectory together.",
    "spotlight": "everything outside the objects' boxes darkened; a thin outline in the slot colour.",
    "blind": "no video at all: the question alone (the text-only baseline).",
}


def cue_text(condition: str) -> str:
    from cuelab.video.cues import CUES

    if condition in CUE_TEXT:
        return CUE_TEXT[condition]
    doc = inspect.getdoc(CUES[condition]) if condition in CUES else None
    return " ".join(doc.split()) if doc else "(no description)"


def sources(bench: RunBenchmark) -> str:
    """Where the videos, labels and boxes came from, and their licences."""
    cfg = bench.cfg
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        return (f"Videos, labels and boxes were made by cuelab's synthetic generator (`cuelab synth`, seed {s.seed}, "
                f"{s.videos} scenes of {s.min_objects}-{s.max_objects} coloured shapes at {s.width}x{s.height}, "
                f"{s.fps:g} fps, written in the Something-Something v2 and Something-Else formats). They hold no "
                "third-party content; choose the licence you publish them under.")
    return ("Videos and labels: Something-Something v2 (Qualcomm Technologies, formerly TwentyBN), distributed "
            "under its own licence after registration; boxes: Something-Else (Materzynska et al., CVPR 2020, "
            "github.com/joaanna/something_else), under the terms stated in that repository. The cued videos here "
            "are derived from the SSv2 videos: check both licences before publishing them; cuelab does not.")


def rendering(bench: RunBenchmark) -> list[str]:
    """How the cues were drawn: the common rules, then each condition with one sidecar's settings."""
    r = bench.cfg.render
    colours = ", ".join(f"{k}: {name}" for k, (name, _) in enumerate(SLOT_COLORS))
    lines = [f"Every condition was decoded and re-encoded the same way (libx264, crf {r.crf}, preset {r.preset}, "
             f"yuv420p, {'source fps' if r.fps is None else f'{r.fps:g} fps'}, odd sizes "
             f"{'padded' if r.even == 'pad' else 'cropped'} to even). Each "
             f"annotated object has one fixed colour by its slot in the annotations ({colours}); the referential "
             f"questions name these colours. The hand is "
             f"{'cued in ' + HAND_COLOR[0] if r.include_hand else 'not cued'}. "
             "Boxes are drawn on the frame their annotation names (the frame index in the Something-Else name), "
             "lines max(2, min(height, width) / 80) pixels wide.", ""]
    for c in bench.conditions:
        lines.append(f"- `{c}`: {cue_text(c)}{_settings(bench, c)}")
    return lines


def _settings(bench: RunBenchmark, condition: str) -> str:
    rows = bench.rows.get(condition) or []
    if condition == BLIND or not rows:
        return ""
    side = Path(str(bench.video_source(condition, rows[0].video_id)) + ".json")
    if not side.is_file():
        return ""
    prov = load_json(side).get("provenance", {})
    cue = prov.get("cue_settings") or {}
    if not cue:
        return ""
    shown = ", ".join(f"{k}={v}" for k, v in cue.items() if k != "class")
    return f" (renderer settings: {cue.get('class', '?')}{': ' + shown if shown else ''})"


def baseline(bench: RunBenchmark) -> list[str]:
    """The run's own accuracies on these questions (results.json), per model and condition."""
    path = bench.run_dir / "results.json"
    if not path.is_file():
        return []
    rows = [a for a in load_json(path).get("accuracy", []) if a.get("kind") == "all"
            and a.get("condition") in bench.conditions]
    if not rows:
        return []
    out = ["| model | condition | n | accuracy % | 95% CI |", "|---|---|---|---|---|"]
    for a in rows:
        out.append(f"| {a['model']} | {a['condition']} | {a['n']} | {100 * a['accuracy']:.1f} | "
                   f"[{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}] |")
    return out


def kinds(bench: RunBenchmark) -> str:
    counts: dict = {}
    for q in bench.questions:
        counts[q.kind] = counts.get(q.kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items())


def schema_table() -> list[str]:
    return ["| field | type | meaning |", "|---|---|---|"] + [f"| `{f}` | {t} | {m} |" for f, t, m in FIELDS]
