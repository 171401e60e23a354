"""`cuelab export --format lmms-eval`: a task folder in lmms-eval 0.7's conventions, used with
`lmms-eval eval --include_path DIR --tasks cuelab_<name> ...`.

    DIR/_default_template_yaml      shared settings of the log-likelihood tasks (`output_type: multiple_choice`)
    DIR/_gen_template_yaml          shared settings of the generation tasks (`output_type: generate_until`)
    DIR/cuelab_<name>_<cond>.yaml   one task per condition: `include`s the template, `tag: cuelab_<name>`
    DIR/cuelab_<name>_gen_<cond>.yaml   the same questions asked for free text, `tag: cuelab_<name>_gen`
    DIR/utils.py                    doc_to_visual / doc_to_text / process_results ... (cuelab/export/lmms_task_utils.py)
    DIR/data/<cond>.jsonl           the documents (dataset_path: json, dataset_kwargs.data_files: absolute path)
    DIR/videos/<cond>/<id>.mp4      the rendered videos
    DIR/cuelab_config.yaml          the run's config (frames and prompt settings for `--model cuelab`)

Why two families: lmms-eval's own wrappers for Qwen-VL, InternVL and VideoLLaMA raise NotImplementedError for
log-likelihood requests, so with them only the generation tasks run; cuelab's model plugin (`--model cuelab`,
cuelab/export/lmms_model.py) answers both, the log-likelihood tasks with the scoring `cuelab eval` uses.
The data files are named by absolute path (lmms-eval hands them to `datasets.load_dataset`, which would read a
relative one from the working directory): a moved folder is exported again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cuelab.export.source import RunBenchmark
from cuelab.fsutil import write_jsonl

UTILS = Path(__file__).with_name("lmms_task_utils.py")

# How both kinds of task are scored and grouped (one copy, so log-likelihood and generation tasks agree).
SCORING = """\
cluster_key: video_id
metric_list:
  - metric: acc
    aggregation: !function utils.aggregate_accuracy
    higher_is_better: true
metadata:
  version: 1.0
"""

TEMPLATE = """\
# Shared by every log-likelihood task of this folder (written by `cuelab export --format lmms-eval`).
dataset_path: json
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: !function utils.doc_to_choice
doc_to_target: !function utils.doc_to_target
# the continuation is the choice string itself, as cuelab scores it (no leading space)
target_delimiter: ""
process_results: !function utils.process_results
# questions of one video are correlated: lmms-eval's clustered standard error groups them
""" + SCORING

GEN_TEMPLATE = """\
# Shared by every generation task of this folder (written by `cuelab export --format lmms-eval`).
dataset_path: json
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
generation_kwargs:
  max_new_tokens: 32
  temperature: 0
  do_sample: false
  until: ["\\n"]
process_results: !function utils.process_generation
""" + SCORING


def task_names(bench: RunBenchmark) -> dict[str, dict[str, str]]:
    """{"tag": ..., "gen_tag": ..., "tasks": {condition: task}, "gen_tasks": {condition: task}}."""
    tag = f"cuelab_{bench.name}"
    return {"tag": tag, "gen_tag": f"{tag}_gen", "tasks": {c: f"{tag}_{c}" for c in bench.conditions},
            "gen_tasks": {c: f"{tag}_gen_{c}" for c in bench.conditions}}


def _task_yaml(template: str, task: str, tag: str, data: Path, condition: str) -> str:
    # JSON strings are YAML scalars: names and paths written with json.dumps need no YAML quoting rules
    return (f"# cuelab benchmark, condition {condition}: the run's test questions on its {condition} videos\n"
            f"include: {template}\ntask: {json.dumps(task)}\ntag: {json.dumps(tag)}\n"
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n")


def write(bench: RunBenchmark, out: Path, final: Path) -> dict:
    """The task folder in `out` (it will be moved to `final`, whose absolute paths the YAMLs name)."""
    names = task_names(bench)
    (out / "_default_template_yaml").write_text(TEMPLATE, encoding="utf-8")
    (out / "_gen_template_yaml").write_text(GEN_TEMPLATE, encoding="utf-8")
    shutil.copyfile(UTILS, out / "utils.py")
    for c, rows in bench.rows.items():
        write_jsonl(out / "data" / f"{c}.jsonl", [r.as_dict() for r in rows])
        data = final / "data" / f"{c}.jsonl"
        (out / f"{names['tasks'][c]}.yaml").write_text(
            _task_yaml("_default_template_yaml", names["tasks"][c], names["tag"], data, c), encoding="utf-8")
        (out / f"{names['gen_tasks'][c]}.yaml").write_text(
            _task_yaml("_gen_template_yaml", names["gen_tasks"][c], names["gen_tag"], data, c), encoding="utf-8")
    videos = bench.copy_videos(out)
    (out / "README.md").write_text(readme(bench, names, final), encoding="utf-8")
    return bench.summary("lmms-eval", final, videos=videos, **names)


def readme(bench: RunBenchmark, names: dict, final: Path) -> str:
    run = bench.run_dir.resolve()
    return f"""# {names['tag']}: an lmms-eval task folder exported by cuelab

{len(bench.questions)} questions of run `{run}` under {len(bench.conditions)} conditions
({', '.join(bench.conditions)}), one task each.

- log-likelihood tasks (tag `{names['tag']}`): {', '.join(names['tasks'].values())}
- generation tasks (tag `{names['gen_tag']}`): {', '.join(names['gen_tasks'].values())}

With cuelab's model plugin (`pip install cuelab` in lmms-eval's environment registers `--model cuelab`), the
log-likelihood tasks are scored as `cuelab eval` scores them:

```bash
lmms-eval eval --include_path {final} --tasks {names['tag']} --model cuelab \\
    --model_args run={run},model=pretrained --log_samples --output_path results/
```

(`model_args`: `run=RUN_DIR,model=pretrained|finetuned`, or `pretrained=HUB_ID_OR_FOLDER[,adapter=LORA_FOLDER]`
with `config={final / 'cuelab_config.yaml'}` for the frames and prompt settings.) Any lmms-eval model runs the
generation tasks, e.g. `--model qwen2_5_vl --model_args pretrained=Qwen/Qwen2.5-VL-3B-Instruct --tasks
{names['gen_tag']}`. The data files are named by absolute path: after moving this folder, export it again.
"""
