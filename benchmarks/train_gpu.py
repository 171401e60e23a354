"""GPU training-step benchmark: the Qwen3-VL-2B architecture (random weights, no download) at the first study's
settings (32 frames of 427x240 under a 1,304,576-pixel budget: 512 video tokens, ~680 tokens a sample;
LoRA r64 on q/k/v/o; batch 8; SDPA; bf16).

Rows, measured in the same process on the same batches:
- baseline: plain transformers + peft: `model(**batch, labels=...)` (logits of every token), gradient
  checkpointing, torch AdamW, the vision encoder's per-frame-pair attention calls.
- cuelab: what `cuelab train` runs on a GPU (cuelab.model.train.prepare_model / AnswerLoss / make_optimizer):
  batched vision attention, logits only at answer positions, no checkpointing, fused AdamW, each LLM
  decoder layer compiled (torch.compile, dynamic shapes).
- cuelab_nocompile: the same without torch.compile; cuelab_gc: with gradient checkpointing (less memory).

Also checks the two paths give the same loss on the same batch with dropout off (bf16 noise expected).

    python benchmarks/train_gpu.py --out DIR        (writes DIR/train_gpu.json and DIR/section.md)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_results, markdown_table  # noqa: E402
from cuelab.config import TrainConfig  # noqa: E402
from cuelab.model.data import collate  # noqa: E402
from cuelab.model.prompt import build_inputs  # noqa: E402
from cuelab.model.tiny import qwen_id_processor, random_model  # noqa: E402

SRC_W, SRC_H = 427, 240
FRAMES = 32
TOTAL_PIXELS = 1_304_576
VERBS = ["Pushing", "Lifting", "Dropping", "Covering", "Pulling", "Rolling", "Poking", "Spinning"]


def frame_size(n: int) -> tuple[int, int]:
    """(h, w) that cuelab.video.io.sample_frames picks for n frames of 427x240 under the pixel budget."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    per_frame = min(256 * 416, TOTAL_PIXELS // n)
    return smart_resize(SRC_H, SRC_W, factor=32, min_pixels=32 * 32, max_pixels=per_frame)


@dataclass
class Frames:
    """Sampled frames as cuelab.video.io.SampledFrames gives them (already resized; explicit metadata)."""

    frames: np.ndarray
    fps: float = 2.0

    def video_metadata(self):
        from transformers.video_utils import VideoMetadata

        n = self.frames.shape[0]
        return VideoMetadata(total_num_frames=n, fps=self.fps, width=SRC_W, height=SRC_H, duration=n / self.fps,
                             frames_indices=list(range(n)))


def make_batches(processor, n_batches: int, batch_size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    h, w = frame_size(FRAMES)
    out = []
    for b in range(n_batches):
        items = []
        for i in range(batch_size):
            frames = Frames(rng.integers(0, 256, (FRAMES, h, w, 3), dtype=np.uint8))
            choices = [str(c) for c in rng.choice(VERBS, 4, replace=False)]
            q = {"id": f"q{b}-{i}", "video": f"v{b}-{i}", "kind": "verb",
                 "question": "_____ the red cube from left to right.", "choices": choices, "answer": choices[0]}
            items.append(build_inputs(processor, q, frames, answer=q["answer"]))
        out.append(collate(items, processor.tokenizer.pad_token_id))
    return out


def build(variant: str, device):
    """(step function, eval-loss function, trainable parameter count) of one variant."""
    from cuelab.model.train import AnswerLoss, make_optimizer, prepare_model

    model = random_model("qwen3-vl-2b", dtype=torch.bfloat16, device=device, seed=0)
    torch.manual_seed(1)  # the same LoRA initialisation in every variant
    if variant == "baseline":
        from peft import LoraConfig, get_peft_model

        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=64, lora_dropout=0.05, bias="none",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                 task_type="CAUSAL_LM"))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        module = model

        def loss_of(batch):
            return model(**batch).loss
    else:
        tc = TrainConfig(gradient_checkpointing=variant.endswith("_gc"), compile=variant != "cuelab_nocompile")
        model, groups = prepare_model(model, tc, device, "sdpa")
        opt = make_optimizer(groups, tc, device)
        params = [p for g in groups for p in g["params"]]
        module = AnswerLoss(model)

        def loss_of(batch):
            labels = batch["labels"]
            rest = {k: v for k, v in batch.items() if k != "labels"}
            s, n = module(labels=labels, **rest)
            return s / n.clamp(min=1)

    def step(batch):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def eval_loss(batch):
        module.eval()
        with torch.no_grad():
            loss = loss_of({k: v.to(device) for k, v in batch.items()}).item()
        module.train()
        return loss

    return step, eval_loss, sum(p.numel() for p in params), (model, opt)


def run_variant(variant: str, batches: list[dict], warmup: int, steps: int, device,
                profile: bool = False) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step, eval_loss, n_params, keep = build(variant, device)
    loss0 = eval_loss(batches[0])  # same weights, dropout off: must agree across variants
    torch.manual_seed(2)
    for i in range(warmup):
        step(batches[i % len(batches)])
    torch.cuda.synchronize(device)
    losses, t0 = [], time.perf_counter()
    for i in range(steps):
        losses.append(step(batches[(warmup + i) % len(batches)]))
    torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for i in range(2):
                step(batches[i % len(batches)])
            torch.cuda.synchronize(device)
        print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=60))
        events = p.key_averages()
        gpu = sum(e.self_device_time_total for e in events) / 2 / 1000
        print(f"{variant}: GPU busy {gpu:.0f} ms a step of {dt * 1000:.0f} ms", flush=True)
    del step, eval_loss, keep
    gc.collect()
    torch.cuda.empty_cache()
    bs = batches[0]["input_ids"].shape[0]
    return {"variant": variant, "ms_per_step": dt * 1000, "samples_per_s": bs / dt, "peak_gib": peak,
            "eval_loss_batch0": loss0, "train_losses": [round(float(x), 4) for x in losses],
            "trainable_params": n_params}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default="baseline,cuelab")
    ap.add_argument("--profile", default="", help="comma list of variants to profile (2 steps)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")

    t = time.perf_counter()
    processor = qwen_id_processor()
    batches = make_batches(processor, 4, args.batch)
    tokens = batches[0]["input_ids"].shape[1]
    video_tokens = int((batches[0]["input_ids"][0] == 151656).sum())
    print(f"batches ready in {time.perf_counter() - t:.1f} s: {tokens} tokens a sample, {video_tokens} video",
          flush=True)

    rows = []
    for v in args.variants.split(","):
        r = run_variant(v, batches, args.warmup, args.steps, device, profile=v in args.profile.split(","))
        print(json.dumps(r), flush=True)
        rows.append(r)
    base = next((r for r in rows if r["variant"] == "baseline"), rows[0])
    for r in rows:
        r["speedup"] = base["ms_per_step"] / r["ms_per_step"]
        r["eval_loss_diff"] = abs(r["eval_loss_batch0"] - base["eval_loss_batch0"])
        r["mean_train_loss_diff"] = float(np.mean(np.abs(np.array(r["train_losses"]) -
                                                          np.array(base["train_losses"]))))
    result = {"tokens_per_sample": tokens, "video_tokens": video_tokens, "batch": args.batch, "rows": rows,
              "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import transformers

    result["transformers"] = transformers.__version__
    (args.out / "train_gpu.json").write_text(json.dumps(result, indent=1))
    table = markdown_table(
        ["path", "ms / step", "samples / s", "peak GiB", "x baseline", "loss batch 0 (no dropout)",
         "mean |train loss - baseline|"],
        [[r["variant"], f"{r['ms_per_step']:.0f}", f"{r['samples_per_s']:.1f}", f"{r['peak_gib']:.1f}",
          f"{r['speedup']:.2f}", f"{r['eval_loss_batch0']:.4f}", f"{r['mean_train_loss_diff']:.4f}"]
         for r in rows])
    notes = (f"Qwen3-VL-2B architecture, random weights, bf16, SDPA, LoRA r64 on q/k/v/o, batch {args.batch}, "
             f"{tokens} tokens a sample ({video_tokens} video tokens: {FRAMES} frames of {SRC_W}x{SRC_H} resized "
             f"to {'x'.join(map(str, frame_size(FRAMES)[::-1]))}); {args.warmup} warm-up + {args.steps} timed "
             f"steps on the same 4 batches for every row; transformers {transformers.__version__}. "
             "baseline = transformers + peft with gradient checkpointing and logits of every token; "
             "cuelab = the path `cuelab train` takes on a GPU (batched vision attention, answer-only logits, "
             "no checkpointing, fused AdamW, compiled decoder layers); cuelab_nocompile = the same without torch.compile; "
             "cuelab_gc = with gradient checkpointing.")
    section = args.out / "section.md"
    section.unlink(missing_ok=True)
    append_results("train_gpu: LoRA training step, Qwen3-VL-2B architecture", table, notes, path=section)


if __name__ == "__main__":
    main()
