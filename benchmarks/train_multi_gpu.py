"""Multi-GPU training check: `cuelab train` on one GPU, then the same run through `accelerate launch` with
configs/accelerate/ddp.yaml (LoRA, 2 processes) and configs/accelerate/fsdp.yaml (full fine-tuning, sharded),
each killed-and-resumed from its checkpoint, on the Qwen3-VL-2B architecture with random weights.

    python benchmarks/train_multi_gpu.py --run RUN_DIR --tokenizer QWEN_TOKENIZER_DIR --out DIR [--gpus 2]

RUN_DIR holds questions/train.jsonl and videos/<condition>/ (e.g. from `cuelab run configs/demo-quick.yaml
--stages data,questions,render`). What it shows:
- DDP: the 2-process run sees the same samples per optimizer step as the 1-GPU run with grad_accum = 2
  (micro-batch g goes to rank g % world), so their loss curves must agree within bf16 noise;
- resume: a run stopped after its checkpoint (train_summary.json and final/ removed, as a crash leaves it)
  and rerun with --resume ends at the same step with the same final loss;
- FSDP: full fine-tuning with sharded weights and optimizer state trains, saves a sharded checkpoint through
  accelerate, resumes from it and gathers the final model on rank 0 (it reloads with from_pretrained).
Writes DIR/train_multi_gpu.json and DIR/section.md (appended to benchmarks/RESULTS.md by --append).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import append_results, markdown_table  # noqa: E402

STEPS = 12
SAVE = 6


def config_yaml(run: Path, model: Path, work: Path) -> Path:
    """The 2B LoRA settings of configs/ssv2-qwen3vl-2b.yaml at a small scale (8 frames of the synthetic clips)."""
    import yaml

    cfg = {
        "name": "multi-gpu-check", "output_dir": str(work / "unused"), "seed": 0,
        "data": {"source": "synthetic"},
        "frames_train": {"fps": 2.0, "min_frames": 8, "max_frames": 8, "total_pixels": None},
        "model": {"name_or_path": str(model), "dtype": "bfloat16", "attn_implementation": "sdpa"},
        "train": {"mode": "lora", "rank": 64, "alpha": 64, "dropout": 0.0, "lr": 1e-4, "warmup_ratio": 0.03,
                  "max_steps": STEPS, "batch_size": 4, "grad_accum": 1, "save_steps": SAVE, "log_steps": 1,
                  "conditions": {"plain": 1.0, "trajectory": 1.0}, "seed": 0, "num_workers": 2,
                  "compile": False},  # a check of the multi-GPU paths, not of speed: no compile time
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def launch(kind: str, gpus: int, cfg: Path, run: Path, out: Path, extra: list[str], resume: bool = False) -> dict:
    cli = ["-m", "cuelab.cli", "train", str(cfg), "--questions", str(run / "questions" / "train.jsonl"),
           "--videos", str(run / "videos"), "--out", str(out), *extra] + (["--resume"] if resume else [])
    if kind == "single":
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / f"{kind}.yaml"), "--num_processes", str(gpus), *cli]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-8000:], sep="\n")
        raise SystemExit(f"{kind} run failed ({proc.returncode}): {' '.join(cmd)}")
    summary = json.loads((out / "train_summary.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    return {"summary": summary, "log": log, "wall": wall}


def crash_after_checkpoint(out: Path) -> None:
    """What a crash after the step-SAVE checkpoint leaves: no final model, no summary, the log cut there."""
    shutil.rmtree(out / "final")
    (out / "train_summary.json").unlink()
    rows = [r for r in (json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip())
            if r["step"] <= SAVE]
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cuelab-multi-gpu"))
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()

    import torch

    from cuelab.model.tiny import build_processor, qwen_tokenizer_from_files, random_model

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = work / "qwen3-vl-2b-random"
    model = random_model("qwen3-vl-2b", dtype=torch.bfloat16, device="cuda", seed=0)
    model.save_pretrained(str(model_dir))
    build_processor(qwen_tokenizer_from_files(args.tokenizer)).save_pretrained(str(model_dir))
    del model
    torch.cuda.empty_cache()
    cfg = config_yaml(args.run, model_dir, work)
    card = torch.cuda.get_device_name(0)

    res = {}
    res["single"] = launch("single", 1, cfg, args.run, work / "single", ["--set", "train.grad_accum=2"])
    res["ddp"] = launch("ddp", args.gpus, cfg, args.run, work / "ddp", [])
    crash_after_checkpoint(work / "ddp")
    res["ddp_resumed"] = launch("ddp", args.gpus, cfg, args.run, work / "ddp", [], resume=True)
    fsdp = ["--set", "train.mode=full", "--set", "train.lr=1e-5", "--set", "train.batch_size=2"]
    res["fsdp"] = launch("fsdp", args.gpus, cfg, args.run, work / "fsdp", fsdp)
    crash_after_checkpoint(work / "fsdp")
    res["fsdp_resumed"] = launch("fsdp", args.gpus, cfg, args.run, work / "fsdp", fsdp, resume=True)

    from transformers import AutoModelForImageTextToText
    from peft import PeftModel

    final_fsdp = AutoModelForImageTextToText.from_pretrained(res["fsdp_resumed"]["summary"]["final"],
                                                             dtype=torch.bfloat16)
    n_fsdp = sum(p.numel() for p in final_fsdp.parameters())
    del final_fsdp
    base = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.bfloat16)
    n_lora = sum(p.numel() for n, p in PeftModel.from_pretrained(base, res["ddp_resumed"]["summary"]["final"])
                 .named_parameters() if "lora_" in n)

    single = {r["step"]: r["loss"] for r in res["single"]["log"]}
    ddp = {r["step"]: r["loss"] for r in res["ddp"]["log"]}
    max_diff = max(abs(single[s] - ddp[s]) for s in single if s in ddp)
    rows = []
    for name in ("single", "ddp", "ddp_resumed", "fsdp", "fsdp_resumed"):
        s = res[name]["summary"]
        rows.append({"run": name, "processes": s["processes"], "mode": s["mode"], "steps": s["steps"],
                     "samples": s["samples"], "train seconds": s["seconds"],
                     "samples/s": round(s["samples"] / s["seconds"], 2) if s["seconds"] else "",
                     "first loss": res[name]["log"][0]["loss"], "final loss": round(s["final_loss"], 5),
                     "wall s (load incl.)": round(res[name]["wall"], 1)})
    notes = [
        f"card: {args.gpus} x {card}; Qwen3-VL-2B architecture, random weights (bf16), 8 frames of 160x120 "
        f"synthetic clips, plain + trajectory; LoRA r64/alpha64 on q/k/v/o, lr 1e-4, {STEPS} steps, checkpoint "
        f"every {SAVE}; FSDP: full fine-tuning (lr 1e-5, batch 2 a process, bf16 autocast, float32 master weights).",
        f"single = 1 GPU, batch 4 x grad_accum 2; ddp = {args.gpus} processes x batch 4: the same 8 samples a step. "
        f"Largest loss difference over {len(single)} steps: {max_diff:.4f} (bf16).",
        f"resumed = the run stopped after its step-{SAVE} checkpoint (final model and summary deleted) and rerun "
        f"with --resume: final loss {res['ddp_resumed']['summary']['final_loss']:.5f} vs "
        f"{res['ddp']['summary']['final_loss']:.5f} uninterrupted (DDP), "
        f"{res['fsdp_resumed']['summary']['final_loss']:.5f} vs {res['fsdp']['summary']['final_loss']:.5f} (FSDP).",
        f"the DDP adapter reloads with PeftModel.from_pretrained ({n_lora:,} LoRA parameters); the FSDP run's final "
        f"model, gathered on rank 0, reloads with from_pretrained ({n_fsdp:,} parameters).",
        "wall s includes process start, model load and (FSDP) sharding; samples/s over the training loop only, "
        "first steps (compile, warm-up) included: a check that multi-GPU runs work, not a throughput benchmark.",
    ]
    table = markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    print(table)
    print("\n".join("- " + n for n in notes))
    (args.out / "train_multi_gpu.json").write_text(json.dumps({"rows": rows, "notes": notes, "res": res},
                                                              indent=1, default=str))
    section = table + "\n\n" + "\n".join("- " + n for n in notes) + "\n"
    (args.out / "section.md").write_text(section)
    if args.append:
        append_results(f"train_multi_gpu ({args.gpus} x {card})", table, "\n".join("- " + n for n in notes))


if __name__ == "__main__":
    main()
