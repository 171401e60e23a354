"""Supervised fine-tuning of Qwen3-VL on the multiple-choice questions: LoRA (default) or full.

Reads top to bottom: the loss, model and trainable parameters, schedule, checkpoints, budgets, then
FinetuneRecipe in torchtune's shape (setup -> train -> cleanup, save_checkpoint every `save_steps`) and train(),
the public entry point that runs it.
The loss is cross-entropy on the answer tokens only, and logits are computed only at those positions (the
vocabulary projection of every prompt token would cost more than the rest of the step's memory).
Checkpoints (trainable weights, optimizer, RNG and the TrainState: step, phase, epoch, data position,
seconds) are written atomically every `save_steps`;
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cuelab.config import ExperimentConfig, TrainConfig
from cuelab.errors import DataError
from cuelab.fsutil import append_jsonl, atomic_write_json, load_json, read_jsonl, write_jsonl
from cuelab.model.data import (FrameCache, Sample, SampleEncoder, batches, epoch_order, load_questions, mix,
                              select)
from cuelab.model.families import family_of
from cuelab.model.prompt import prompt_spec

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
    prefix = family_of(model).lm_layer_prefix
    if tc.lora_on_vision or all(re.match(prefix, n) for n in hits):
        return sorted(wanted)
    leaves = "|".join(re.escape(t) for t in sorted(wanted))
    return rf"{prefix}(?:.*\.)?(?:{leaves})"


def _resolve_base(cfg: ExperimentConfig, base_model, out: Path, is_main: bool, accelerator) -> str:
    if base_model is not None:
        return str(base_model)
    if cfg.model.tiny is not None:
        from cuelab.model.tiny import build_tiny_model

        folder = out / "base"
        if is_main and not (folder / "config.json").is_file():
            build_tiny_model(folder, cfg.model.tiny, family=cfg.model.family)
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
    The family's speed-ups keep the maths (Qwen3-VL: the vision patch embedding as a matmul and, with SDPA,
    batched vision attention: cuelab.model.speed); on CUDA with `compile` each LLM decoder layer is compiled
    (2.3x the plain transformers + peft step together: benchmarks/RESULTS.md)."""
    family = family_of(model)
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False
    family.speedups(model, training=True, attn_implementation=attn_implementation)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tc.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=tc.rank, lora_alpha=tc.alpha, lora_dropout=tc.dropout, bias="none",
                          target_modules=lora_targets(model, tc), task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": tc.lr}]
    else:
        vision_ids = {id(p) for p in family.vision_tower(model).parameters()}
        vision, rest = [], []
        for p in model.parameters():
            p.requires_grad_(True)
            (vision if id(p) in vision_ids else rest).append(p)
        groups = [{"params": rest, "lr": tc.lr},
                  {"params": vision, "lr": tc.vision_lr if tc.vision_lr is not None else tc.lr}]
    if tc.compile and torch.device(device).type == "cuda":
        # one compiled graph shared by every decoder layer (LoRA inside): fuses norms, rotary, SiLU, dropout
        for layer in family.language_model(model).layers:
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

@dataclass
class TrainState:
    """Where a run stands. Saved as each checkpoint's state.json (these keys in this order; asdict keeps the
    format of checkpoints written before this class) and restored by a resume."""

    step: int = 0  # optimizer steps done
    phase: int = 0  # index into train.phases
    phase_step: int = 0  # optimizer steps done in this phase
    epoch: int = 0  # epoch within the phase
    pos: int = 0  # micro-batch position in the epoch's order where the next step starts
    elapsed: float = 0.0  # seconds of training (what max_seconds counts)
    samples: int = 0  # samples seen, all processes together
    phase_elapsed: float = 0.0  # seconds of training in this phase
    run_key: str = ""  # run_key(): a checkpoint resumes only the run that wrote it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> TrainState:
        saved = load_json(path)
        missing = [f.name for f in fields(cls) if f.name not in saved]
        if missing:
            raise DataError(f"checkpoint state lacks {missing}", file=str(path), field=missing[0])
        return cls(**{f.name: saved[f.name] for f in fields(cls)})


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


def write_checkpoint(out: Path, model, optimizer, state: TrainState, accelerator, keep: int = 2) -> Path:
    """Write checkpoints/step-N atomically: a temp folder renamed when complete. Every rank writes its RNG;
    state.json (the TrainState) is written last."""
    from safetensors.torch import save_file

    root = out / "checkpoints"
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
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
        atomic_write_json(tmp / "state.json", state.to_dict())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint(path: Path, model, optimizer, accelerator) -> TrainState:
    """Load a checkpoint's weights, optimizer state and this rank's RNG into place; returns its TrainState."""
    from safetensors.torch import load_file

    if _sharded(accelerator):
        accelerator.load_state(str(path / "accelerate"))
        return TrainState.load(path / "state.json")
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
    return TrainState.load(path / "state.json")


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
        if not hasattr(unwrapped, "peft_config"):  # a full model (an adapter holds no tower weights)
            family_of(unwrapped).serving_layout(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


# --- budgets ---------------------------------------------------------------------------------------------------

@dataclass
class PhasePlan:
    """One curriculum phase: its samples and how many micro-batches of one epoch form whole optimizer steps."""

    name: str
    samples: list[Sample]
    steps_per_epoch: int
    fraction: float


@dataclass
class Budget:
    """How long to train: total optimizer steps (None under a time budget) and each phase's share in steps
    and in seconds (None where that budget is not set)."""

    total: int | None
    phase_steps: list[int | None]
    phase_secs: list[float | None]


def _phase_plan(questions: list[dict], tc: TrainConfig, world: int) -> list[PhasePlan]:
    plans = []
    for p, phase in enumerate(tc.phases):
        qs = select(questions, phase.kinds, phase.max_objects)
        samples = mix(qs, tc.conditions, seed=tc.seed + p)
        per_step = tc.batch_size * tc.grad_accum * world
        steps_per_epoch = len(samples) // per_step
        if steps_per_epoch == 0:
            raise DataError(f"phase {phase.name!r} has {len(samples)} samples, fewer than one optimizer step "
                            f"({per_step} = batch_size x grad_accum x processes)", field="train.phases")
        plans.append(PhasePlan(phase.name, samples, steps_per_epoch, phase.fraction))
    return plans


def _budgets(plans: list[PhasePlan], tc: TrainConfig) -> Budget:
    """Phases share the budget (max_steps, max_seconds or epochs of the last phase) by `fraction`."""
    total_frac = sum(p.fraction for p in plans)
    shares = [p.fraction / total_frac for p in plans]
    if tc.max_steps is not None:
        total = tc.max_steps
    elif tc.max_seconds is not None:
        total = None
    else:
        total = max(1, round(tc.epochs * plans[-1].steps_per_epoch))
    steps: list[int | None] = [None] * len(plans)
    if total is not None:
        cum = np.cumsum(shares)
        bounds = [0] + [int(round(c * total)) for c in cum]
        bounds[-1] = total
        steps = [bounds[i + 1] - bounds[i] for i in range(len(plans))]
    secs = [s * tc.max_seconds if tc.max_seconds is not None else None for s in shares]
    return Budget(total, steps, secs)


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


# --- the recipe ------------------------------------------------------------------------------------------------

@dataclass
class _Accumulated:
    """One optimizer step's micro-batches on this rank, forward and backward done."""

    losses: list[torch.Tensor]  # each micro-batch's mean answer loss (none for a batch with no readable sample)
    pos: int  # micro-batch position after the step


class FinetuneRecipe:
    """One training run in torchtune's shape: setup() -> train() -> cleanup(), with save_checkpoint() every
    `save_steps`. Everything a resume needs besides weights, optimizer and RNG is in `state` (a TrainState)."""

    def __init__(self, cfg: ExperimentConfig, questions_path, videos_root, out_dir, base_model=None,
                 resume: bool = False, *, train_cfg: TrainConfig | None = None,
                 on_step: Callable[[dict], None] | None = None):
        self.cfg, self.tc = cfg, train_cfg or cfg.train
        self.questions_path, self.videos_root, self.out = questions_path, videos_root, Path(out_dir)
        self.base_model, self.resume, self.on_step = base_model, resume, on_step
        self.state = TrainState()
        self.last_loss = float("nan")
        self.done = False

    # --- setup ---

    def setup(self) -> dict | None:
        """Accelerator, model, optimizer, data, budget, the resumed state and the loggers. Returns the summary of
        a run that already finished with the same settings, base model and questions (nothing to train then)."""
        from transformers import set_seed

        self.out.mkdir(parents=True, exist_ok=True)
        self._setup_accelerator()
        if self.resume and (earlier := self._finished_before()) is not None:
            return earlier
        ckpts = self._resumable_checkpoints()
        if self.tc.threads:  # float sums split over threads differ in the last bits with the thread count
            torch.set_num_threads(self.tc.threads)
        set_seed(self.tc.seed)
        self._setup_model()
        self._setup_data()
        self.state = TrainState(run_key=self.key)
        if ckpts:
            self._restore(ckpts[-1])
        self.accelerator.wait_for_everyone()
        self._setup_logging()
        return None

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator

        probe_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bf16 = _bf16(self.tc, probe_device)
        # cpu=True where there is no GPU: torchrun on CPUs then forms a gloo group instead of N lone processes
        self.accelerator = Accelerator(mixed_precision="bf16" if (self.bf16 and self.tc.mode == "full") else "no",
                                       cpu=not torch.cuda.is_available())
        acc = self.accelerator
        self.is_main, self.world, self.rank = acc.is_main_process, acc.num_processes, acc.process_index
        self.key = run_key(self.cfg, self.tc, self.base_model, self.questions_path, self.world)

    def _finished_before(self) -> dict | None:
        summary_path = self.out / "train_summary.json"
        if summary_path.is_file() and (self.out / "final").is_dir():
            done_before = load_json(summary_path)
            if done_before.get("run_key") == self.key:
                return done_before
        return None

    def _resumable_checkpoints(self) -> list[Path]:
        """Checkpoints of this run key when resuming, oldest first; without any, what an earlier run left is
        removed (a fresh run replaces it)."""
        ckpts = [c for c in checkpoints(self.out)
                 if load_json(c / "state.json").get("run_key") == self.key] if self.resume else []
        if not ckpts and self.is_main:
            for name in ("checkpoints", "final", "tensorboard"):
                shutil.rmtree(self.out / name, ignore_errors=True)
            for name in ("train_log.jsonl", "errors.jsonl", "train_summary.json"):
                (self.out / name).unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()
        return ckpts

    def _setup_model(self) -> None:
        acc, tc = self.accelerator, self.tc
        self.base = _resolve_base(self.cfg, self.base_model, self.out, self.is_main, acc)
        model, self.processor, groups = setup_model(self.base, tc, self.cfg, acc.device, self.bf16)
        optimizer = make_optimizer(groups, tc, acc.device)
        self.wrapper, self.optimizer = acc.prepare(AnswerLoss(model), optimizer)
        self.autocast = torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=self.bf16 and tc.mode == "full")

    def _setup_data(self) -> None:
        questions = load_questions(self.questions_path)
        self.plans = _phase_plan(questions, self.tc, self.world)
        self.budget = _budgets(self.plans, self.tc)
        frames = FrameCache(self.videos_root, self.cfg.frames_train.spec(family_of(self.processor).geometry(
            self.processor)))
        self.encoder = SampleEncoder(self.processor, frames, prompt_spec(self.cfg),
                                     errors_path=self.out / "errors.jsonl" if self.is_main else None)
        self.pad_id = self.processor.tokenizer.pad_token_id

    def _restore(self, checkpoint: Path) -> None:
        self.state = read_checkpoint(checkpoint, self.wrapper, self.optimizer, self.accelerator)
        log_path = self.out / "train_log.jsonl"
        if self.is_main and log_path.is_file():  # drop log rows after the checkpoint (they will be redone)
            write_jsonl(log_path, [r for r in read_jsonl(log_path, skip_partial=True)
                                   if r["step"] <= self.state.step])

    def _setup_logging(self) -> None:
        from tqdm import tqdm

        self.writer = None
        if self.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.state.step or None)
            except ImportError:  # tensorboard is optional; train_log.jsonl has the same numbers
                self.writer = None
        self.bar = tqdm(total=self.budget.total, initial=self.state.step, disable=not self.is_main,
                        desc=f"train ({self.tc.mode})", unit="step")

    # --- the loop ---

    def train(self) -> None:
        """Optimizer steps from the (restored) state until the budget is spent: phase by phase, epoch by epoch."""
        self.t_start = time.perf_counter() - self.state.elapsed
        while self.state.phase < len(self.plans) and not self.done:
            phase_over = self._train_epoch()
            if not phase_over and not self.done:  # next epoch of the same phase
                self.state.epoch += 1
                self.state.pos = 0

    def _train_epoch(self) -> bool:
        """The rest of the current epoch of the current phase, from state.pos; True when the phase ended in it."""
        tc, s = self.tc, self.state
        p = s.phase
        plan = self.plans[p]
        n_micro = plan.steps_per_epoch * tc.grad_accum * self.world
        order = epoch_order(len(plan.samples), tc.seed, p, s.epoch)[:n_micro * tc.batch_size]
        stream = batches(plan.samples, order, s.pos, tc.batch_size, self.encoder, self.pad_id, self.rank,
                         self.world, workers=tc.num_workers)
        while True:
            step = self._accumulate(stream)
            if step is None:  # epoch exhausted
                return False
            factor = self._optimizer_step()
            self._advance(step, factor, plan.name)
            phase_over = self._check_budget(p)
            if s.step % tc.save_steps == 0 and not self.done:
                self.save_checkpoint()
            if self.on_step is not None:
                self.on_step(dict(s.to_dict(), loss=self.last_loss))
            if phase_over or self.done:
                return phase_over

    def _accumulate(self, stream) -> _Accumulated | None:
        """Forward and backward of grad_accum micro-batches on this rank, gradients synced on the last one;
        None when the epoch runs out first."""
        losses, micro, pos = [], 0, self.state.pos
        for pos, batch in stream:
            micro += 1
            sync = micro == self.tc.grad_accum
            ctx = self.accelerator.no_sync(self.wrapper) if not sync else contextlib.nullcontext()
            with ctx:
                if batch is not None:
                    losses.append(self._backward(batch))
            if sync:
                return _Accumulated(losses, pos)
        return None

    def _backward(self, batch: dict) -> torch.Tensor:
        batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        with self.autocast:
            loss_sum, n_tok = self.wrapper(**batch)
        loss = loss_sum / n_tok.clamp(min=1)
        self.accelerator.backward(loss / self.tc.grad_accum)
        return loss.detach()

    def _progress(self) -> float:
        if self.budget.total is not None:
            return self.state.step / self.budget.total
        return self.state.elapsed / self.tc.max_seconds

    def _optimizer_step(self) -> float:
        """Clip, set the scheduled lr, step; returns the lr factor used."""
        self.accelerator.clip_grad_norm_(self.wrapper.parameters(), self.tc.max_grad_norm)
        factor = lr_factor(self._progress(), self.tc)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return factor

    def _advance(self, step: _Accumulated, factor: float, phase_name: str) -> None:
        """The step's loss (mean over ranks), the state moved on by one step, the progress bar and the logs."""
        tc, s, acc = self.tc, self.state, self.accelerator
        step_loss = torch.stack(step.losses).mean() if step.losses else torch.tensor(float("nan"), device=acc.device)
        self.last_loss = acc.reduce(step_loss, reduction="mean").item()
        now = time.perf_counter()
        s.phase_elapsed += (now - self.t_start) - s.elapsed
        s.step, s.phase_step, s.pos = s.step + 1, s.phase_step + 1, step.pos
        s.elapsed, s.samples = now - self.t_start, s.samples + tc.batch_size * tc.grad_accum * self.world
        self.bar.update(1)
        if self.is_main and (s.step % tc.log_steps == 0 or s.step == 1):
            row = {"step": s.step, "loss": round(self.last_loss, 6), "lr": factor * tc.lr,
                   "seconds": round(s.elapsed, 3), "phase": phase_name, "samples": s.samples}
            append_jsonl(self.out / "train_log.jsonl", [row])
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}")
            if self.writer is not None:
                self.writer.add_scalar("train/loss", self.last_loss, s.step)
                self.writer.add_scalar("train/lr", factor * tc.lr, s.step)

    def _check_budget(self, p: int) -> bool:
        """Whether phase p is over (its steps or seconds spent); sets `done` when the whole budget is. A phase
        that is over moves the state to the start of the next one."""
        s, b, tc = self.state, self.budget, self.tc
        budget_steps = b.phase_steps[p] is not None and s.phase_step >= b.phase_steps[p]
        budget_secs = b.phase_secs[p] is not None and s.phase_elapsed >= b.phase_secs[p]
        out_of_time = tc.max_seconds is not None and s.elapsed >= tc.max_seconds
        phase_over = budget_steps or budget_secs or out_of_time
        self.done = out_of_time or (b.total is not None and s.step >= b.total)
        if phase_over:
            s.phase, s.phase_step, s.epoch, s.pos, s.phase_elapsed = p + 1, 0, 0, 0, 0.0
        return phase_over

    # --- saving ---

    def save_checkpoint(self) -> Path:
        """checkpoints/step-N: trainable weights, optimizer, every rank's RNG and the TrainState."""
        return write_checkpoint(self.out, self.wrapper, self.optimizer, self.state, self.accelerator)

    def cleanup(self) -> dict:
        """Close the progress bar and TensorBoard, write <out>/final and train_summary.json; returns the summary."""
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        final = save_final(self.out, self.wrapper, self.processor, self.accelerator)
        s = self.state
        summary = {"run_key": self.key, "mode": self.tc.mode, "steps": s.step, "samples": s.samples,
                   "seconds": round(s.elapsed, 3), "final_loss": self.last_loss, "final": str(final),
                   "base_model": self.base, "processes": self.world, "bad_videos": len(self.encoder.bad)}
        if self.is_main:
            atomic_write_json(self.out / "train_summary.json", summary)
        return summary


def train(cfg: ExperimentConfig, questions_path, videos_root, out_dir, base_model=None, resume: bool = False, *,
          train_cfg: TrainConfig | None = None, on_step: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune on questions_path x cfg.train.conditions (videos at videos_root/<condition>/<video>), writing
    <out_dir>/{train_log.jsonl, checkpoints/, tensorboard/, final/}. `train_cfg` replaces cfg.train (the
    demo's pretraining passes cfg.pretrain); `on_step` gets the TrainState as a dict, with the step's loss.
    Returns a summary dict (also written to train_summary.json)."""
    recipe = FinetuneRecipe(cfg, questions_path, videos_root, out_dir, base_model, resume, train_cfg=train_cfg,
                            on_step=on_step)
    earlier = recipe.setup()
    if earlier is not None:  # finished earlier: nothing to redo
        return earlier
    recipe.train()
    return recipe.cleanup()
