"""`cuelab export --format vlmevalkit`: VLMEvalKit's video-MCQ conventions (vlmeval/dataset/video_base.py,
videomme.py): one TSV per condition and a dataset class file to copy into a VLMEvalKit checkout.

    DIR/cuelab_<name>_<cond>.tsv     index, video, question, candidates (JSON list), answer, answer_index,
                                     question_id, kind, condition, prompt, video_path
    DIR/videos/<cond>/<id>.mp4       what the class's prepare_dataset names as the video root
    DIR/cuelab_<name>.py             class CuelabVideoMCQ(VideoBaseDataset), TYPE "Video-MCQ"
                                     (template: cuelab/export/vlmevalkit_dataset.py; its docstring: how to install)

VLMEvalKit is not on PyPI and asks models to generate (no log-likelihood scoring); the class scores the text by
the same rule as the lmms-eval generation tasks (cuelab/export/lmms_task_utils.py: match_choice, copied in).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from cuelab.export import lmms_task_utils
from cuelab.export.source import RunBenchmark
from cuelab.fsutil import atomic_write_text

TEMPLATE = Path(__file__).with_name("vlmevalkit_dataset.py")
COLUMNS = ["index", "video", "question", "candidates", "answer", "answer_index", "question_id", "kind",
           "condition", "prompt", "video_path"]


def dataset_names(bench: RunBenchmark) -> dict[str, str]:
    """{VLMEvalKit dataset name: condition}."""
    return {f"cuelab_{bench.name}_{c}": c for c in bench.conditions}


def class_file(bench: RunBenchmark, final: Path) -> str:
    """The class template with this export's root, dataset names and choice-matching rule filled in."""
    text = TEMPLATE.read_text(encoding="utf-8")
    stub = 'def match_choice(text, choices):  # replaced by the export with cuelab/export/lmms_task_utils.py\'s\n' \
           '    raise NotImplementedError\n'
    parts = {'"__CUELAB_ROOT__"': json.dumps(str(final)),
             "DATASETS = {}  # dataset name -> condition; filled in by the export":
                 f"DATASETS = {json.dumps(dataset_names(bench), indent=4)}",
             stub: inspect.getsource(lmms_task_utils.match_choice),
             "cuelab_<name>": f"cuelab_{bench.name}"}
    for old, new in parts.items():
        if old not in text:
            raise RuntimeError(f"{TEMPLATE}: the part {old[:40]!r} to fill in is missing")
        text = text.replace(old, new)
    return text


def table(rows) -> "object":
    import pandas as pd

    return pd.DataFrame([{"index": k, "video": r.video_id, "question": r.question,
                          "candidates": json.dumps(r.choices, ensure_ascii=False), "answer": r.answer,
                          "answer_index": r.answer_index, "question_id": r.question_id, "kind": r.kind,
                          "condition": r.condition, "prompt": r.prompt, "video_path": r.video or ""}
                         for k, r in enumerate(rows)], columns=COLUMNS)


def write(bench: RunBenchmark, out: Path, final: Path) -> dict:
    names = dataset_names(bench)
    for name, c in names.items():
        atomic_write_text(out / f"{name}.tsv", table(bench.rows[c]).to_csv(sep="\t", index=False))
    atomic_write_text(out / f"cuelab_{bench.name}.py", class_file(bench, final))
    videos = bench.copy_videos(out)
    return bench.summary("vlmevalkit", final, videos=videos, datasets=names,
                         class_file=str(final / f"cuelab_{bench.name}.py"))
