"""Does the demo's tiny Qwen3-VL really learn from the video? Pretrain it through the pipeline (synthetic data ->
questions -> plain videos -> tiny model -> full pretraining on plain videos), score it on the plain test videos
and blind (no video), per variant and seed; append the table to benchmarks/RESULTS.md.

    python benchmarks/demo_learning.py                       # the demo recipe vs the levers that made it, seeds 0 1
    python benchmarks/demo_learning.py --variants recipe --seeds 0 1 2
    python benchmarks/demo_learning.py --variants recipe "vision init 0.02=model.tiny.vision_initializer_range=0.02"

A variant is a name from VARIANTS or "NAME=key=value;key=value" (config overrides). Seed S sets every seed of
the run (data, questions, model init, pretraining order) to S, so a seed is a different dataset and init.
The headline is accuracy over the object and verb questions (the ones plain video can answer); referential
questions ("the object marked in red") need a cue and are reported apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_results, markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ("object", "verb")
# the levers that made the recipe, each undone on its own (docs/demo-research.md)
VARIANTS = {
    "recipe": [],
    "vision init 0.02 (Qwen's)": ["model.tiny.vision_initializer_range=0.02"],
    "no verb warm-up": ["pretrain.phases=[{name: main, kinds: [object, verb]}]"],
    "64x64 frames (4 tokens a frame pair)": ["frames_train.max_pixels_per_frame=6144",
                                             "frames_eval.max_pixels_per_frame=6144"],
    "600 videos": ["data.synthetic.videos=600"],
}
PLAIN_ONLY = ["render.cues=[plain]", "train.conditions={plain: 1.0}", "eval.conditions=[plain]",
              "attention.conditions=[plain]", "pretrain.from_checkpoint=null"]


def seed_overrides(seed: int) -> list[str]:
    return [f"seed={seed}", f"data.synthetic.seed={seed}", f"questions.seed={seed}", f"model.tiny.seed={seed}",
            f"pretrain.seed={seed}"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    if text in VARIANTS:
        return text, VARIANTS[text]
    if "=" not in text:
        raise SystemExit(f"unknown variant {text!r}; known: {', '.join(VARIANTS)} (or NAME=key=value;...)")
    name, sets = text.split("=", 1)
    return name, [s for s in sets.split(";") if s]


def headline(results: dict, model: str, condition: str, kinds=HEADLINE) -> dict:
    """Accuracy pooled over `kinds` (from the per-kind counts of results.json), with its Wilson CI."""
    from cuelab.evaluate.metrics import wilson

    rows = [r for r in results["accuracy"]
            if r["model"] == model and r["condition"] == condition and r["kind"] in kinds]
    n, correct = sum(r["n"] for r in rows), sum(r["correct"] for r in rows)
    lo, hi = wilson(correct, n)
    return {"n": n, "correct": correct, "acc": correct / n if n else float("nan"), "lo": lo, "hi": hi}


def one_run(config: Path, sets: list[str], out: Path) -> dict:
    """data -> questions -> plain render -> tiny model -> pretrain, then plain + blind scoring of `pretrained`."""
    from cuelab.config import load_config
    from cuelab.evaluate.run import evaluate
    from cuelab.fsutil import load_json
    from cuelab.pipeline import RunPaths, run_pipeline

    cfg = load_config(config, sets + PLAIN_ONLY + [f"output_dir={out}"])
    paths = RunPaths(out)
    load_before = os.getloadavg()[0]
    t0 = time.time()
    done = run_pipeline(cfg, stages=["data", "questions", "render", "model", "pretrain"])
    wall = time.time() - t0
    summary = load_json(paths.models / "pretrain-run" / "train_summary.json")
    eval_dir = out / "eval-plain-blind"
    shutil.rmtree(eval_dir, ignore_errors=True)
    res = evaluate(cfg, str(paths.models / "pretrained"), model_name="pretrained",
                   questions_path=paths.questions / "test.jsonl", videos_root=paths.videos, out_dir=eval_dir,
                   conditions=["plain"], blind=True, progress=False)["results"]
    per_kind = {(r["condition"], r["kind"]): r for r in res["accuracy"] if r["model"] == "pretrained"}
    return {"pretrain_s": summary["seconds"], "steps": summary["steps"], "samples": summary["samples"],
            "stages_s": {k: v.get("seconds") for k, v in done.items()}, "wall_s": wall,
            "load": (load_before, os.getloadavg()[0]),
            "plain": headline(res, "pretrained", "plain"), "blind": headline(res, "pretrained", "blind"),
            "per_kind": per_kind}


def _pct(h: dict) -> str:
    return f"{100 * h['acc']:.1f} [{100 * h['lo']:.0f}, {100 * h['hi']:.0f}]"


def _kind(r: dict, cond: str, kind: str) -> str:
    x = r["per_kind"].get((cond, kind))
    return f"{100 * x['accuracy']:.0f} (n={x['n']})" if x else "-"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--set", action="append", default=[], help="override for every run (key=value)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "demo-learning")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--no-append", action="store_true", help="print the table only")
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for text in a.variants:
        name, sets = parse_variant(text)
        for seed in a.seeds:
            run_dir = a.out / f"seed-{seed}"  # shared by the variants: unchanged stages are skipped
            r = one_run(a.config, seed_overrides(seed) + a.set + sets, run_dir)
            p, b = r["plain"], r["blind"]
            rows.append([name, seed, r["steps"], f"{r['pretrain_s']:.0f}", f"{r['samples'] / r['pretrain_s']:.0f}",
                         _pct(p), _pct(b), f"{100 * (p['acc'] - b['acc']):+.1f}", _kind(r, "plain", "object"),
                         _kind(r, "plain", "verb"), _kind(r, "blind", "object"), _kind(r, "blind", "verb"),
                         _kind(r, "plain", "referential"), _kind(r, "blind", "referential"),
                         f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"])
            print(markdown_table(HEADER, rows[-1:]), flush=True)
    table = markdown_table(HEADER, rows)
    notes = (f"Config {a.config.relative_to(ROOT) if a.config.is_relative_to(ROOT) else a.config} "
             f"(+ {' '.join(a.set) or 'no overrides'}), torch threads {torch.get_num_threads()}, "
             f"{os.cpu_count()} CPUs. Headline = accuracy over the object + verb questions of the test videos "
             "(95% Wilson CI), plain video vs blind (same questions, no video); chance 25%. Per kind: accuracy "
             "(n questions). Referential questions ask for the object \"marked in red\" and cannot be seen on "
             "plain video. Seed S = data, questions, init and order seeds all S. Load = 1-min load average "
             "before / after the run (2 cores: above ~2 the pretraining shared them).")
    if a.no_append:
        print(table + "\n\n" + notes)
    else:
        append_results("Demo: the tiny Qwen3-VL learns from the video (CPU pretraining)", table, notes)


HEADER = ["variant", "seed", "steps", "pretrain s", "samples/s", "plain obj+verb % [CI]", "blind obj+verb % [CI]",
          "gap", "plain object", "plain verb", "blind object", "blind verb", "plain referential",
          "blind referential", "load"]

if __name__ == "__main__":
    main()
