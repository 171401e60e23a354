"""Supervised fine-tuning of Qwen3-VL on the multiple-choice questions: LoRA (default) or full.

Reads top to bottom like a recipe: model -> trainable parameters -> samples -> budget -> loop -> final save.
The loss is cross-entropy on the answer tokens only, and logits are computed only at those positions (the
vocabulary projection of every prompt token would cost more than the rest of the step's memory).
Checkpoints (trainable weights, optimizer, data position, RNG) are written atomically every `save_steps`;
`resume=True` continues from the last one and replays exactly the batches an uninterrupted run would see.
Runs under `accelerate launch` / `torchrun` (DDP): micro-batch g goes to rank g % world.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cuelab.config import ExperimentConfig, TrainConfig
from cuelab.errors import DataError
from cuelab.fsutil import append_jsonl, atomic_write_json, load_json, read_jsonl, write_jsonl
from cuelab.model.data import FrameCache, SampleEncoder, batches, epoch_order, load_questions, mix, select
from cuelab.model.prompt import prompt_spec

LM_LAYERS = r"model\.language_model\.layers\.\d+\..*"


# --- the loss --------------------------------------------------------------------------------------------------

class AnswerLoss(torch.nn.Module):
    """Wraps the (PEFT) model so DDP sees one module: returns (sum of answer-token losses, answer tokens).
    Logits are computed only where the shifted labels are not -100."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, labels, **batch):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.model(**batch).last_hidden_state  # (B, L, D)
        target = labels[:, 1:]
        mask = target != -100
        logits = base.lm_head(hidden[:, :-1][mask]).float()  # (answer tokens, vocab)
        return F.cross_entropy(logits, target[mask], reduction="sum"), mask.sum()


# --- model and trainable parameters ----------------------------------------------------------------------------

def lora_targets(model, tc: TrainConfig):
    """PEFT target_modules: the named leaf modules of the LLM's layers only (unless lora_on_vision). A plain
    list when those names occur only in the LLM (the most portable form, e.g. for vLLM), else a regex."""
    names = [n for n, _ in model.named_modules()]
    wanted = set(tc.target_modules)
    hits = [n for n in names if n.rsplit(".", 1)[-1] in wanted]
    if not hits:
        raise DataError(f"no module named {sorted(wanted)} in the model", field="train.target_modules")
    if tc.lora_on_vision or all(re.fullmatch(LM_LAYERS, n) for n in hits):
        return sorted(wanted)
    leaves = "|".join(re.escape(t) for t in sorted(wanted))
    return rf"model\.language_model\.layers\.\d+\.(?:.*\.)?(?:{leaves})"


def _resolve_base(cfg: ExperimentConfig, base_model, out: Path, is_main: bool, accelerator) -> str:
    if base_model is not None:
        return str(base_model)
    if cfg.model.tiny is not None:
        from cuelab.model.tiny import build_tiny_model

        folder = out / "base"
        if is_main and not (folder / "config.json").is_file():
            build_tiny_model(folder, cfg.model.tiny)
        accelerator.wait_for_everyone()
        return str(folder)
    return cfg.model.name_or_path


def _bf16(tc: TrainConfig, device) -> bool:
    if tc.bf16 == "on":
        return True
    return tc.bf16 == "auto" and torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()


def setup_model(base: str, tc: TrainConfig, cfg: ExperimentConfig, device, bf16: bool):
    """(model, processor, param groups) from a model folder or hub id; see prepare_model."""
    from cuelab.model.load import load_model

    dtype = torch.bfloat16 if (bf16 and tc.mode == "lora") else torch.float32
    model, processor = load_model(base, dtype=dtype, attn_implementation=cfg.model.attn_implementation)
    model, groups = prepare_model(model, tc, device, cfg.model.attn_implementation)
    return model, processor, groups


def prepare_model(model, tc: TrainConfig, device, attn_implementation: str = "sdpa"):
    """The training form of a loaded Qwen3-VL: (model, optimizer param groups). LoRA: base weights as loaded
    (bf16 on GPU), adapters in float32 (PEFT's default). Full: every weight trainable, float32 master
    weights (autocast does the bf16 maths), the vision tower with its own lr if `vision_lr` is set.
    The vision patch embedding runs as a matmul and, with SDPA, the vision attention is batched
    (cuelab.model.speed); on CUDA with `compile` each LLM decoder layer is compiled (2.3x the plain
    transformers + peft step together: benchmarks/RESULTS.md)."""
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    from cuelab.model.speed import batch_vision_attention, linear_patch_embed

    linear_patch_embed(model)
    if attn_implementation == "sdpa":
        batch_vision_attention(model)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tc.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=tc.rank, lora_alpha=tc.alpha, lora_dropout=tc.dropout, bias="none",
                          target_modules=lora_targets(model, tc), task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": tc.lr}]
    else:
        vision, rest = [], []
        for n, p in model.named_parameters():
            p.requires_grad_(True)
            (vision if ".visual." in f".{n}" else rest).append(p)
        groups = [{"params": rest, "lr": tc.lr},
                  {"params": vision, "lr": tc.vision_lr if tc.vision_lr is not None else tc.lr}]
    if tc.compile and torch.device(device).type == "cuda":
        # one compiled graph shared by every decoder layer (LoRA inside): fuses norms, rotary, SiLU, dropout
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer in base.model.language_model.layers:
            layer.compile(dynamic=True)
    model.train()
    return model, groups


def make_optimizer(groups, tc: TrainConfig, device):
    """AdamW; the fused CUDA kernel on GPU (one launch for all parameters instead of one per tensor)."""
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                                  fused=torch.device(device).type == "cuda")
    for g in optimizer.param_groups:
        g["base_lr"] = g["lr"]
    return optimizer


# --- schedule --------------------------------------------------------------------------------------------------

def lr_factor(progress: float, tc: TrainConfig) -> float:
    """Multiplier of the base lr at `progress` in [0, 1]: linear warm-up, then cosine / linear / constant."""
    progress = min(max(progress, 0.0), 1.0)
    if tc.warmup_ratio > 0 and progress < tc.warmup_ratio:
        return progress / tc.warmup_ratio
    if tc.schedule == "constant":
        return 1.0
    rest = (progress - tc.warmup_ratio) / max(1e-12, 1.0 - tc.warmup_ratio)
    return 0.5 * (1.0 + math.cos(math.pi * rest)) if tc.schedule == "cosine" else 1.0 - rest


# --- checkpoints -----------------------------------------------------------------------------------------------

def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (state.json is written last), oldest first."""
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith("step-") and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _sharded(accelerator) -> bool:
    """FSDP / DeepSpeed: weights and optimizer state are split over ranks; accelerate saves and loads them."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_checkpoint(out: Path, model, optimizer, state: dict, accelerator, keep: int = 2) -> Path:
    """Write checkpoints/step-N atomically: a temp folder renamed when complete. Every rank writes its RNG."""
    from safetensors.torch import save_file

    root = out / "checkpoints"
    final = root / f"step-{state['step']:07d}"
    tmp = root / f".tmp-step-{state['step']:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if _sharded(accelerator):  # model, optimizer and RNG of every rank, sharded
        accelerator.save_state(str(tmp / "accelerate"))
    else:
        torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            save_file(_trainable(accelerator.unwrap_model(model)), str(tmp / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / "state.json", state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, model, optimizer, accelerator) -> dict:
    from safetensors.torch import load_file

    if _sharded(accelerator):
        accelerator.load_state(str(path / "accelerate"))
        return load_json(path / "state.json")
    unwrapped = accelerator.unwrap_model(model)
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(unwrapped.named_parameters())
    missing = set(weights) ^ {n for n, p in params.items() if p.requires_grad}
    if missing:
        raise DataError(f"checkpoint does not match the model's trainable parameters: {sorted(missing)[:5]}",
                        file=str(path))
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    rng = path / f"rng-{accelerator.process_index}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    return load_json(path / "state.json")


# --- final save ------------------------------------------------------------------------------------------------

def save_final(out: Path, model, processor, accelerator) -> Path:
    """<out>/final: the PEFT adapter (adapter_config.json + adapter_model.safetensors) or the full model,
    with the processor; written to a temp folder and renamed."""
    final, tmp = out / "final", out / ".tmp-final"
    accelerator.wait_for_everyone()
    full_state = None
    if _sharded(accelerator):  # gathered on rank 0 (every rank takes part)
        full_state = {k.removeprefix("model."): v for k, v in accelerator.get_state_dict(model).items()}
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped = unwrapped.model if isinstance(unwrapped, AnswerLoss) else unwrapped
        kwargs = {"state_dict": full_state} if full_state is not None else {}
        unwrapped.save_pretrained(str(tmp), safe_serialization=True, **kwargs)
        processor.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


# --- the loop --------------------------------------------------------------------------------------------------

def _phase_plan(questions: list[dict], tc: TrainConfig, world: int) -> list[dict]:
    """Per phase: its samples and how many micro-batches of one epoch form whole optimizer steps."""
    plans = []
    for p, phase in enumerate(tc.phases):
        qs = select(questions, phase.kinds, phase.max_objects)
        samples = mix(qs, tc.conditions, seed=tc.seed + p)
        per_step = tc.batch_size * tc.grad_accum * world
        steps_per_epoch = len(samples) // per_step
        if steps_per_epoch == 0:
            raise DataError(f"phase {phase.name!r} has {len(samples)} samples, fewer than one optimizer step "
                            f"({per_step} = batch_size x grad_accum x processes)", field="train.phases")
        plans.append({"name": phase.name, "samples": samples, "steps_per_epoch": steps_per_epoch,
                      "fraction": phase.fraction})
    return plans


def _budgets(plans: list[dict], tc: TrainConfig) -> tuple[int | None, list[int | None], list[float | None]]:
    """(total steps or None, steps per phase, seconds per phase): phases share the budget by `fraction`."""
    total_frac = sum(p["fraction"] for p in plans)
    shares = [p["fraction"] / total_frac for p in plans]
    if tc.max_steps is not None:
        total = tc.max_steps
    elif tc.max_seconds is not None:
        total = None
    else:
        total = max(1, round(tc.epochs * plans[-1]["steps_per_epoch"]))
    steps: list[int | None] = [None] * len(plans)
    if total is not None:
        cum = np.cumsum(shares)
        bounds = [0] + [int(round(c * total)) for c in cum]
        bounds[-1] = total
        steps = [bounds[i + 1] - bounds[i] for i in range(len(plans))]
    secs = [s * tc.max_seconds if tc.max_seconds is not None else None for s in shares]
    return total, steps, secs


def run_key(cfg: ExperimentConfig, tc: TrainConfig, base_model, questions_path, world: int) -> str:
    """Fingerprint of what a run's result depends on: training and frame settings, prompt options, base model,
    the questions' bytes and the number of processes (it sets which samples form a step)."""
    import hashlib
    import json

    settings = json.loads(tc.model_dump_json(exclude={"num_workers", "log_steps", "save_steps"}))  # no effect
    payload = json.dumps({"train": settings,
                          "frames": json.loads(cfg.frames_train.model_dump_json()),
                          "model": json.loads(cfg.model.model_dump_json()), "base": str(base_model),
                          "world": world}, sort_keys=True).encode()
    h = hashlib.sha256(payload)
    if not Path(questions_path).is_file():
        raise DataError("questions file not found", file=str(questions_path))
    with open(questions_path, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:16]


def train(cfg: ExperimentConfig, questions_path, videos_root, out_dir, base_model=None, resume: bool = False, *,
          train_cfg: TrainConfig | None = None, on_step: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune on questions_path x cfg.train.conditions (videos at videos_root/<condition>/<video>), writing
    <out_dir>/{train_log.jsonl, checkpoints/, tensorboard/, final/}. `train_cfg` replaces cfg.train (the
    demo's pretraining passes cfg.pretrain). Returns a summary dict (also written to train_summary.json)."""
    from accelerate import Accelerator
    from tqdm import tqdm
    from transformers import set_seed

    tc = train_cfg or cfg.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe_device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = _bf16(tc, probe_device)
    # cpu=True where there is no GPU: torchrun on CPUs then forms a gloo group instead of N lone processes
    accelerator = Accelerator(mixed_precision="bf16" if (bf16 and tc.mode == "full") else "no",
                              cpu=not torch.cuda.is_available())
    is_main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index

    # resume only what the same settings, base model and questions started
    key = run_key(cfg, tc, base_model, questions_path, world)
    summary_path = out / "train_summary.json"
    if resume and summary_path.is_file() and (out / "final").is_dir():
        done_before = load_json(summary_path)
        if done_before.get("run_key") == key:  # finished earlier: nothing to redo
            return done_before
    ckpts = [c for c in checkpoints(out) if load_json(c / "state.json").get("run_key") == key] if resume else []
    if not ckpts and is_main:  # a fresh run replaces what an earlier run left
        for name in ("checkpoints", "final", "tensorboard"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("train_log.jsonl", "errors.jsonl", "train_summary.json"):
            (out / name).unlink(missing_ok=True)
    accelerator.wait_for_everyone()

    if tc.threads:  # float sums split over threads differ in the last bits with the thread count
        torch.set_num_threads(tc.threads)
    set_seed(tc.seed)
    base = _resolve_base(cfg, base_model, out, is_main, accelerator)
    model, processor, groups = setup_model(base, tc, cfg, accelerator.device, bf16)
    optimizer = make_optimizer(groups, tc, accelerator.device)
    wrapper = AnswerLoss(model)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)

    questions = load_questions(questions_path)
    plans = _phase_plan(questions, tc, world)
    total, phase_steps, phase_secs = _budgets(plans, tc)
    frames = FrameCache(videos_root, cfg.frames_train.spec())
    encoder = SampleEncoder(processor, frames, prompt_spec(cfg),
                            errors_path=out / "errors.jsonl" if is_main else None)
    pad_id = processor.tokenizer.pad_token_id

    state = {"step": 0, "phase": 0, "phase_step": 0, "epoch": 0, "pos": 0, "elapsed": 0.0, "samples": 0,
             "phase_elapsed": 0.0, "run_key": key}
    log_path = out / "train_log.jsonl"
    if ckpts:
        state = load_checkpoint(ckpts[-1], wrapper, optimizer, accelerator)
        if is_main and log_path.is_file():  # drop log rows after the checkpoint (they will be redone)
            write_jsonl(log_path, [r for r in read_jsonl(log_path, skip_partial=True)
                                   if r["step"] <= state["step"]])
    accelerator.wait_for_everyone()

    writer = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"), purge_step=state["step"] or None)
        except ImportError:  # tensorboard is optional; train_log.jsonl has the same numbers
            writer = None

    def progress() -> float:
        if total is not None:
            return state["step"] / total
        return state["elapsed"] / tc.max_seconds

    bar = tqdm(total=total, initial=state["step"], disable=not is_main, desc=f"train ({tc.mode})", unit="step")
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16 and tc.mode == "full")
    t_start = time.perf_counter() - state["elapsed"]
    last_loss = float("nan")
    done = False
    while state["phase"] < len(plans) and not done:
        p = state["phase"]
        plan = plans[p]
        n_micro = plan["steps_per_epoch"] * tc.grad_accum * world
        order = epoch_order(len(plan["samples"]), tc.seed, p, state["epoch"])[:n_micro * tc.batch_size]
        stream = batches(plan["samples"], order, state["pos"], tc.batch_size, encoder, pad_id, rank, world,
                         workers=tc.num_workers)
        phase_over = False
        while True:
            # one optimizer step: grad_accum micro-batches on each rank
            losses, micro, pos = [], 0, state["pos"]
            for pos, batch in stream:
                micro += 1
                sync = micro == tc.grad_accum
                ctx = accelerator.no_sync(wrapper) if not sync else contextlib.nullcontext()
                with ctx:
                    if batch is not None:
                        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                        with autocast:
                            loss_sum, n_tok = wrapper(**batch)
                        loss = loss_sum / n_tok.clamp(min=1)
                        accelerator.backward(loss / tc.grad_accum)
                        losses.append(loss.detach())
                if sync:
                    break
            if micro < tc.grad_accum:  # epoch exhausted
                break
            accelerator.clip_grad_norm_(wrapper.parameters(), tc.max_grad_norm)
            factor = lr_factor(progress(), tc)
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * factor
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.stack(losses).mean() if losses else torch.tensor(float("nan"),
                                                                               device=accelerator.device)
            last_loss = accelerator.reduce(step_loss, reduction="mean").item()
            now = time.perf_counter()
            state["phase_elapsed"] += (now - t_start) - state["elapsed"]
            state.update(step=state["step"] + 1, phase_step=state["phase_step"] + 1, pos=pos,
                         elapsed=now - t_start, samples=state["samples"] + tc.batch_size * tc.grad_accum * world)
            bar.update(1)
            if is_main and (state["step"] % tc.log_steps == 0 or state["step"] == 1):
                row = {"step": state["step"], "loss": round(last_loss, 6), "lr": factor * tc.lr,
                       "seconds": round(state["elapsed"], 3), "phase": plan["name"], "samples": state["samples"]}
                append_jsonl(log_path, [row])
                bar.set_postfix(loss=f"{last_loss:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", last_loss, state["step"])
                    writer.add_scalar("train/lr", factor * tc.lr, state["step"])
            budget_steps = phase_steps[p] is not None and state["phase_step"] >= phase_steps[p]
            budget_secs = phase_secs[p] is not None and state["phase_elapsed"] >= phase_secs[p]
            out_of_time = tc.max_seconds is not None and state["elapsed"] >= tc.max_seconds
            phase_over = budget_steps or budget_secs or out_of_time
            done = out_of_time or (total is not None and state["step"] >= total)
            if phase_over:
                state.update(phase=p + 1, phase_step=0, epoch=0, pos=0, phase_elapsed=0.0)
            if state["step"] % tc.save_steps == 0 and not done:
                save_checkpoint(out, wrapper, optimizer, dict(state), accelerator)
            if on_step is not None:
                on_step(dict(state, loss=last_loss))
            if phase_over or done:
                break
        if not phase_over and not done:  # next epoch of the same phase
            state.update(epoch=state["epoch"] + 1, pos=0)
    bar.close()
    if writer is not None:
        writer.close()

    final = save_final(out, wrapper, processor, accelerator)
    summary = {"run_key": key, "mode": tc.mode, "steps": state["step"], "samples": state["samples"],
               "seconds": round(state["elapsed"], 3), "final_loss": last_loss, "final": str(final),
               "base_model": base, "processes": world, "bad_videos": len(encoder.bad)}
    if is_main:
        atomic_write_json(summary_path, summary)
    return summary
