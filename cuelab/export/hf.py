"""`cuelab export --format hf`: a Hugging Face `datasets` folder, one config per condition.

    DIR/README.md                       the dataset card: YAML header (configs, licence) + schema, sources, cues
    DIR/data/<condition>/test.parquet   the rows (cuelab.export.source.Row), one per test question
    DIR/videos/<condition>/<id>.mp4     the cued videos the rows' `video` paths name (relative to DIR)
    DIR/cuelab_config.yaml              the run's config (frames and prompt settings)

`datasets.load_dataset(DIR, CONDITION)` reads the card's `configs` and gives a DatasetDict with one `test` split.
The `video` column holds paths relative to DIR (as a dataset repository on the Hub keeps them); join them with
the folder the dataset was loaded from.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cuelab.export import card
from cuelab.export.source import RunBenchmark
from cuelab.fsutil import atomic_write_bytes


def schema():
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("question_id", s), ("video_id", s), ("condition", s), ("kind", s), ("question", s),
                      ("choices", pa.list_(s)), ("answer", s), ("answer_index", pa.int64()), ("prompt", s),
                      ("video", s), ("template", s), ("target_object", s), ("cue_colors", s)])


def write_parquet(rows: list[dict], path: Path) -> None:
    """The rows as one Parquet file, with the fixed schema (so every config has the same column types, even a
    condition whose `video` is null throughout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sch = schema()
    table = pa.Table.from_pylist([{k: r[k] for k in sch.names} for r in rows], schema=sch)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def write(bench: RunBenchmark, out: Path, final: Path) -> dict:
    for c, rows in bench.rows.items():
        write_parquet([r.as_dict() for r in rows], out / "data" / c / "test.parquet")
    videos = bench.copy_videos(out)
    (out / "README.md").write_text(dataset_card(bench), encoding="utf-8")
    return bench.summary("hf", final, videos=videos, configs=list(bench.conditions))


def front_matter(bench: RunBenchmark) -> str:
    n = len(bench.questions) * len(bench.conditions)
    size = "n<1K" if n < 1_000 else "1K<n<10K" if n < 10_000 else "10K<n<100K"
    meta = {"pretty_name": f"cuelab {bench.name}", "license": "other", "language": ["en"],
            "task_categories": ["video-text-to-text"], "size_categories": [size],
            "tags": ["video", "multiple-choice", "visual-prompting", "cuelab"],
            "configs": [{"config_name": c, "data_files": [{"split": "test", "path": f"data/{c}/test.parquet"}],
                         **({"default": True} if k == 0 else {})} for k, c in enumerate(bench.conditions)]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


RULES = {"sum": "the choice of highest log-likelihood after the chat template's assistant prefix",
         "mean": "the choice of highest log-likelihood per token after the chat template's assistant prefix",
         "greedy": "greedy decoding confined to the choices",
         "sampled": "the first study's sampled decoding, scored by exact match"}


def _frames(f) -> str:
    """The frames rule in words (cuelab.video.io.sample_indices: `fps` within min/max frames a clip)."""
    if f.rule != "fps":
        return f"frames by the {f.rule!r} rule"
    n = f"always {f.min_frames}" if f.min_frames == f.max_frames else f"{f.min_frames}-{f.max_frames}"
    return f"frames at {f.fps:g} fps, {n} a clip,"


def dataset_card(bench: RunBenchmark) -> str:
    cfg, first = bench.cfg, bench.conditions[0]
    videos = len({q.video for q in bench.questions})
    lines = [
        front_matter(bench), f"# cuelab benchmark `{bench.name}`", "",
        f"Do visual cues help a video VLM? The {len(bench.questions)} test questions ({card.kinds(bench)}) on "
        f"{videos} videos of the cuelab run `{cfg.name}`, each asked under {len(bench.conditions)} conditions: "
        f"{', '.join(f'`{c}`' for c in bench.conditions)}. The same questions in the same order in every "
        "condition, so any two conditions can be compared question by question (paired).", "",
        "```python", "import datasets, os", f'ds = datasets.load_dataset("DIR", "{first}")["test"]',
        'row = ds[0]; video = os.path.join("DIR", row["video"])  # paths are relative to the dataset folder',
        "```", "", "## Fields", "", *card.schema_table(), "",
        "## Sources and licences", "", card.sources(bench), "",
        "## How the cues were drawn", "", *card.rendering(bench), "",
        "## How the questions were made", "",
        f"cuelab's `{cfg.questions.builder}` question builder: four choices, one blank; distractors of the "
        "answer's kind (object distractors never another object of the same video; verb distractors from "
        "templates of the same shape); answer positions balanced; the split by video, seeded "
        f"(seed {cfg.questions.seed}). Referential questions (\"The object marked in red is _____.\") name a "
        "cue colour: only a model that reads the cue can answer them; under `plain` and `blind` they are the "
        "unanswerable control.", "",
        "## How cuelab scores them", "",
        f"`cuelab eval` samples {_frames(cfg.frames_eval)} (`frames_eval` in cuelab_config.yaml), puts the video "
        f"before the `prompt` text in the user turn and answers with {RULES[cfg.eval.rule]} (`eval.rule: "
        f"{cfg.eval.rule}`).",
    ]
    base = card.baseline(bench)
    if base:
        lines += ["", "The run's own results (accuracy %, Wilson 95% CI):", "", *base]
    return "\n".join(lines) + "\n"
