"""Make (or check) the demo's shipped pretrained tiny model, checkpoints/demo-pretrained/, with the project's own
pipeline: synthetic data -> questions -> plain videos -> tiny model -> full pretraining (configs/demo.yaml's
sections; step budget, fixed torch threads), then plain + blind scoring of the result for the record.

    python scripts/demo_checkpoint.py            # pretrain and write checkpoints/demo-pretrained/
    python scripts/demo_checkpoint.py --check    # pretrain again elsewhere; exit 1 unless the weights are identical
    python scripts/demo_checkpoint.py --protocol first-study   # checkpoints/demo-first-study-pretrained/
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLAIN_ONLY = ["render.cues=[plain]", "train.conditions={plain: 1.0}", "eval.conditions=[plain]",
              "attention.conditions=[plain]", "pretrain.from_checkpoint=null"]


def pretrain(config: Path, work: Path, overrides: list[str], protocol: str | None = None):
    """Run the pipeline up to `pretrain` in `work`; returns (cfg, paths, seconds)."""
    from cuelab.config import load_config
    from cuelab.pipeline import RunPaths, run_pipeline

    cfg = load_config(config, overrides + PLAIN_ONLY + [f"output_dir={work}"], protocol=protocol)
    t0 = time.time()
    run_pipeline(cfg, stages=["data", "questions", "render", "model", "pretrain"])
    return cfg, RunPaths(work), time.time() - t0


def score(cfg, paths) -> dict:
    """Accuracy % of the pretrained model per kind on plain and blind (the test split)."""
    from cuelab.evaluate.run import evaluate

    res = evaluate(cfg, str(paths.models / "pretrained"), model_name="pretrained",
                   questions_path=paths.questions / "test.jsonl", videos_root=paths.videos,
                   out_dir=paths.root / "eval-plain-blind", conditions=["plain"], blind=True,
                   progress=False)["results"]
    out: dict = {}
    for r in res["accuracy"]:
        out.setdefault(r["condition"], {})[r["kind"]] = {"n": r["n"], "correct": r["correct"],
                                                         "accuracy": round(r["accuracy"], 4)}
    for cond, kinds in out.items():  # the demo's headline: object + verb (plain video can answer them)
        n = sum(kinds[k]["n"] for k in ("object", "verb") if k in kinds)
        c = sum(kinds[k]["correct"] for k in ("object", "verb") if k in kinds)
        kinds["object+verb"] = {"n": n, "correct": c, "accuracy": round(c / n, 4) if n else None}
    return out


def main(argv=None) -> int:
    from cuelab.fsutil import load_json
    from cuelab.model.shipped import MANIFEST, check_checkpoint, write_checkpoint
    from cuelab.pipeline import pretrain_data

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: checkpoints/demo-pretrained, or demo-<protocol>-pretrained with --protocol")
    ap.add_argument("--protocol", default=None, help="make it under this protocol (cuelab demo --protocol ...)")
    ap.add_argument("--work", type=Path, default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--check", action="store_true", help="pretrain again and compare with --out bit for bit")
    ap.add_argument("--set", action="append", default=[], help="config override (key=value)")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="demo-pretrain-"))
    a.out = a.out or ROOT / "checkpoints" / (f"demo-{a.protocol}-pretrained" if a.protocol else "demo-pretrained")
    cfg, paths, seconds = pretrain(a.config, work, a.set, a.protocol)
    model = paths.models / "pretrained"
    if a.check:
        why = check_checkpoint(a.out, cfg, pretrain_data(cfg, paths))
        if why is not None:
            print(f"{a.out}: {why}")
            return 1
        shipped = load_json(a.out / MANIFEST)["files"]
        from cuelab.model.shipped import _sha256

        fresh = {p.name: _sha256(p) for p in sorted(model.iterdir()) if p.is_file()}
        same = fresh == shipped
        print(f"{'identical' if same else 'DIFFERENT'}: {model} vs {a.out} (pretraining {seconds:.0f} s)")
        return 0 if same else 1
    summary = load_json(paths.models / "pretrain-run" / "train_summary.json")
    extra = {"made_with": f"python scripts/demo_checkpoint.py --config {a.config.name}"
                          + (f" --protocol {a.protocol}" if a.protocol else "")
                          + "".join(f" --set {s}" for s in a.set),
             "pretrain": {k: summary[k] for k in ("steps", "samples", "seconds", "final_loss")},
             "threads": cfg.pretrain.threads, "pipeline_seconds": round(seconds, 1), "accuracy": score(cfg, paths)}
    write_checkpoint(model, a.out, cfg, pretrain_data(cfg, paths), extra)
    print(f"wrote {a.out}: {extra['accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
