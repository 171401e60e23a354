"""The eval stage, top to bottom: questions -> per condition, per video: frames once -> every model and prompt
variant scores the video's questions -> prediction lines appended -> results table.

Resumable: each (model, condition) file is opened with the ids it already holds, and only missing questions
are scored (a video whose questions are all done is not even decoded). A video that fails to load is recorded
as failed for each of its questions, and so is a question with a `problem` (cuelab.question): one bad question
never stops a run.

The seams: `evaluate(...)` (the public keyword signature) fills an `EvalRequest` and runs it (`run_eval`); the
loop makes one `EvalJob` per (variant, video) and hands it to a `Backend` (`prepare` in worker threads, then
`score`, then `close`): "hf" (HFBackend below, through cuelab.evaluate.hf) and "vllm" (cuelab.evaluate.vllm; run
in the vLLM venv when this interpreter has no vllm).

Importable inside the vLLM venv: no torch / pandas at module level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from cuelab.config import ExperimentConfig
from cuelab.errors import DataError
from cuelab.evaluate.choices import round_scores
from cuelab.evaluate.predictions import (BLIND, PredictionFile, condition_name, expand, match_choice,
                                         predictions_path, prompt_ids_sha, record, sample_seed)
from cuelab.locks import folder_lock
from cuelab.question import Question, load_questions

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Variant:
    """One prediction file's worth of work: which model (adapter on/off), which condition, which prompt."""

    model: str  # name in the file (pretrained / finetuned)
    condition: str  # rendered condition (or "blind")
    hint: bool
    adapter: bool  # adapter enabled (False: the base model)

    @property
    def blind(self) -> bool:
        return self.condition == BLIND

    @property
    def label(self) -> str:
        return condition_name(self.condition, self.blind, self.hint)


@dataclass(frozen=True)
class EvalRequest:
    """What one eval call scores and where it writes; `evaluate()` fills it from its arguments and cfg.eval."""

    model_path: str | Path  # hub id or folder
    questions_path: Path
    out_dir: Path
    videos_root: Path | None = None  # <videos_root>/<condition>/<video>; None when every condition is blind
    adapter: str | Path | None = None  # a LoRA folder on top of model_path
    model_name: str = "pretrained"  # the adapter's (or else the model's) name in the prediction files
    base_name: str | None = None  # with an adapter: the base model (adapter off) is scored too, under this name
    conditions: tuple[str, ...] = ("plain",)
    blind: bool = False  # also ask with no video
    hint: bool = False  # also ask with the hint prompt
    backend: str = "hf"  # hf / vllm
    shard: tuple[int, int] = (0, 1)  # (i, n): every n-th video from the i-th
    server: str | None = None  # a running vLLM server's URL
    device: str | None = None
    limit: int | None = None  # only the first `limit` questions of the file
    write_results: bool = True  # results.json / .csv in out_dir afterwards
    progress: bool = True
    lock: bool = True  # False only where the caller holds out_dir's eval lock (the vLLM venv worker)

    def variants(self) -> list[Variant]:
        return variants(list(self.conditions), self.model_name, self.base_name, self.blind, self.hint)

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> EvalRequest:
        paths = {k: Path(d[k]) for k in ("questions_path", "out_dir", "videos_root") if d[k] is not None}
        return cls(**{**d, **paths, "conditions": tuple(d["conditions"]), "shard": tuple(d["shard"])})


@dataclass
class EvalJob:
    """One video's questions for one variant in one condition: what a backend prepares and scores in one go."""

    variant: Variant
    video: str | int
    condition: str
    questions: list[Question]
    frames: Any = None  # SampledFrames (None: blind); a backend may drop them once its inputs are prepared
    inputs: Any = None  # the backend's prepared inputs (Backend.prepare)
    with_video: bool | None = None  # None: whether frames were given

    def __post_init__(self):
        if self.with_video is None:
            self.with_video = self.frames is not None


@runtime_checkable
class Backend(Protocol):
    """A scoring engine in the eval loop: HFBackend (transformers, below) and VLLMBackend (cuelab.evaluate.vllm).

    - `chunk`: videos per `score` call; `workers`: threads running `prepare` ahead of the model (0: inline).
    - `prepare(job)`: CPU work for one job (processor inputs, ...), run in worker threads while the model scores
      earlier videos, so it must be thread-safe and leave the model alone. Returns the job to score.
    - `score(jobs)`: for each job, in order, its prediction lines (cuelab.evaluate.predictions.record), one per
      question in the job's order, with `scores` / `mean_scores` per choice and the pick under `cfg.eval.rule`.
      The loop has already recorded unreadable videos and questions with a `problem` as failed.
    - `close()`: release the model or engine; called once, after the last `score`.
    A new backend: a class with these members, its name in `BACKENDS`, and a test (tests/test_eval_seams.py).
    """

    chunk: int
    workers: int

    def prepare(self, job: EvalJob) -> EvalJob: ...

    def score(self, jobs: list[EvalJob]) -> list[list[dict]]: ...

    def close(self) -> None: ...


def group_by_video(questions: list[Question], shard: tuple[int, int] = (0, 1)) -> list[tuple[Any, list[Question]]]:
    """[(video, its questions)] in first-appearance order; shard i/n keeps every n-th video from i."""
    groups: dict = {}
    for q in questions:
        groups.setdefault(q.video, []).append(q)
    i, n = shard
    return [g for k, g in enumerate(groups.items()) if k % n == i]


def variants(conditions: list[str], model_name: str, base_name: str | None, blind: bool,
             hint: bool) -> list[Variant]:
    conds = list(dict.fromkeys(c for c in conditions if c != BLIND)) + ([BLIND] if blind or BLIND in conditions
                                                                          else [])
    models = [(model_name, True)] + ([(base_name, False)] if base_name else [])
    return [Variant(m, c, h, a) for c in conds for h in ([False, True] if hint else [False]) for m, a in models]


def _top(logprobs, k: int = 5) -> dict:
    """The k most likely first answer tokens {id: log-prob} (what vLLM's `logprobs=k` returns)."""
    import torch

    k = min(k, int(torch.isfinite(logprobs).sum()))
    vals, ids = logprobs.topk(k)
    return {str(int(i)): round(float(v), 6) for v, i in zip(vals, ids)}


# ---------------------------------------------------------------------------------------------------------------

def evaluate(cfg: ExperimentConfig, model_path, adapter=None, model_name: str | None = None, questions_path=None,
             videos_root=None, out_dir=None, conditions: list[str] | None = None, blind: bool | None = None,
             hint: bool | None = None, *, base_name: str | None = None, backend: str | None = None,
             shard: tuple[int, int] = (0, 1), vllm_server: str | None = None, device: str | None = None,
             limit: int | None = None, write_results: bool = True, progress: bool = True, lock: bool = True) -> dict:
    """Score every question under every condition; append predictions; write results.json/csv in out_dir.

    `adapter` (a LoRA folder) is scored as `model_name` (default "finetuned", else "pretrained"); with
    `base_name` the base model (adapter off) is scored too in the same pass, sharing vision features.
    Arguments left None come from cfg.eval. The whole call holds out_dir's eval lock for this shard
    (cuelab.locks): a second evaluate into the same folder raises FolderBusy before reading or writing anything.
    `lock=False` only where the caller already holds it (the vLLM venv worker, run by a locked parent)."""
    ec = cfg.eval
    if base_name and not adapter:
        raise DataError("base_name needs an adapter (the base is the model with the adapter off)", field="adapter")
    request = EvalRequest(
        model_path=model_path, questions_path=Path(questions_path), out_dir=Path(out_dir),
        videos_root=Path(videos_root) if videos_root is not None else None, adapter=adapter,
        model_name=model_name or ("finetuned" if adapter else "pretrained"), base_name=base_name,
        conditions=tuple(conditions if conditions is not None else ec.conditions),
        blind=ec.blind if blind is None else blind, hint=ec.hint if hint is None else hint,
        backend=backend or ec.backend, shard=tuple(shard), server=vllm_server or ec.vllm_server, device=device,
        limit=limit, write_results=write_results, progress=progress, lock=lock)
    return run_eval(cfg, request)


def run_eval(cfg: ExperimentConfig, request: EvalRequest) -> dict:
    """The eval stage for one request: predictions appended under out_dir/predictions (resumed), a summary
    {scored, failed, already, seconds, backend, files} and, with write_results, its results."""
    r = request
    with folder_lock(r.out_dir, "eval", r.shard) if r.lock else nullcontext():
        if r.backend == "vllm" and not r.server and not _has_vllm():
            summary = _run_in_vllm_venv(cfg, r)
        else:
            summary = _evaluate(cfg, r, load_questions(r.questions_path, strict=False)[:r.limit])
        if r.write_results:
            from cuelab.evaluate.metrics import write_results as _write

            summary["results"] = _write(r.out_dir / "predictions", r.out_dir)
    return summary


def _evaluate(cfg: ExperimentConfig, request: EvalRequest, questions: list[Question]) -> dict:
    vars_ = request.variants()
    files = {v: PredictionFile(predictions_path(request.out_dir, v.model, v.label, request.shard)) for v in vars_}
    groups = group_by_video(questions, request.shard)
    counts = {"scored": 0, "failed": 0, "already": 0}
    backend = None
    t0 = time.time()
    try:
        for cond in dict.fromkeys(v.condition for v in vars_):
            todo_groups = []
            for vid, qs in groups:
                todo = {v: files[v].todo(qs) for v in vars_ if v.condition == cond}
                counts["already"] += sum(len(qs) - len(t) for t in todo.values())
                if any(todo.values()):
                    todo_groups.append((vid, todo))
            if not todo_groups:
                continue
            if backend is None:
                backend = make_backend(cfg, request)
            _score_condition(cfg, request, backend, cond, todo_groups, files, counts)
    finally:
        if backend is not None:
            backend.close()
    seconds = time.time() - t0
    return {**counts, "seconds": round(seconds, 2), "backend": request.backend,
            "files": sorted(str(f.path) for f in files.values())}


def _score_condition(cfg, request: EvalRequest, backend: Backend, cond: str, todo_groups: list,
                     files: dict[Variant, PredictionFile], counts: dict) -> None:
    """One condition's videos: loaded and prepared ahead in worker threads, scored `backend.chunk` at a time,
    every record appended as soon as it is made (failed ones first)."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo_groups), desc=f"eval {cond}", unit="video", disable=not request.progress,
               file=sys.stderr)
    load = partial(_load_video, cfg, backend, cond, request.videos_root)
    for chunk in _chunks(prefetch(load, todo_groups, backend.workers), backend.chunk):
        jobs = []
        for loaded in chunk:
            for v, recs in loaded.failed.items():
                files[v].append(recs)
                counts["failed"] += len(recs)
            jobs += loaded.jobs
        for job, recs in zip(jobs, backend.score(jobs)):
            files[job.variant].append(recs)
            counts["scored"] += len(recs)
        bar.update(len(chunk))
    bar.close()


@dataclass
class LoadedVideo:
    """One video in one condition, ready: failed records per variant, and the jobs to score."""

    failed: dict[Variant, list[dict]] = field(default_factory=dict)
    jobs: list[EvalJob] = field(default_factory=list)


def _load_video(cfg, backend: Backend, cond: str, videos_root, group) -> LoadedVideo:
    """Worker-thread part of one video: frames (once for every variant), failure records, prepared jobs."""
    from cuelab.model.families import frame_spec
    from cuelab.video.io import find_video, sample_frames

    vid, todo = group
    frames, error = None, None
    if cond != BLIND:
        try:
            spec = frame_spec(cfg.frames_eval, getattr(backend, "processor", None))  # the model's frame geometry
            frames = sample_frames(find_video(videos_root / cond, vid), spec, video_id=vid)
        except Exception as e:  # noqa: BLE001 - any unreadable video is recorded, never fatal
            error = f"{type(e).__name__}: {e}"
    out = LoadedVideo()
    for v, qs in todo.items():
        fails = [record(q.record, v.model, v.label, error=error or q.problem) for q in qs if error or q.problem]
        if fails:
            out.failed[v] = fails
        good = [q for q in qs if not (error or q.problem)]
        if good:
            out.jobs.append(backend.prepare(EvalJob(v, vid, cond, good, frames)))
    return out


def prefetch(fn, items, workers: int):
    """fn over items in `workers` threads, in order, at most 2 x workers ahead (decoding and the processor
    overlap the model's work; torch and PyAV release the GIL)."""
    if workers <= 0:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _chunks(it, n):
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------------------------
# The transformers backend (the vLLM one is cuelab.evaluate.vllm.VLLMBackend)
# ---------------------------------------------------------------------------------------------------------------

class HFBackend:
    """Backend through transformers (cuelab.evaluate.hf.HFScorer): the base model and its adapter in one pass."""

    chunk = 1
    workers = 2  # threads preparing the next videos (decode, frames, processor) while the model runs

    def __init__(self, cfg: ExperimentConfig, model_path, adapter=None, device=None):
        import torch

        from cuelab.evaluate.hf import HFScorer, VisionCache, vision_is_adapted
        from cuelab.model.families import family_of
        from cuelab.model.load import load_model
        from cuelab.model.prompt import prompt_spec

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(cfg.seed)
        # the packed choice rows need a custom attention mask: SDPA (or eager), not flash-attention
        attn = "sdpa" if cfg.model.attn_implementation == "flash_attention_2" else cfg.model.attn_implementation
        self.model, self.processor = load_model(model_path, dtype=cfg.model.dtype, attn_implementation=attn,
                                                device=device, adapter=adapter)
        family_of(self.model).speedups(self.model, compile=cfg.eval.compile and torch.device(device).type == "cuda")
        self.has_adapter = adapter is not None
        self.share_vision = not (self.has_adapter and vision_is_adapted(self.model))
        self.rule = cfg.eval.rule
        # videos per scoring call: on a GPU several (one vision call, one batched prefix, one choices forward);
        # on a CPU one (nothing to gain, and the memory of every row's prefix cache)
        on_gpu = torch.device(device).type == "cuda"
        self.chunk = max(1, cfg.eval.videos_per_call if on_gpu else 1)
        self.workers = max(6 if on_gpu else self.workers, self.chunk)
        self.sampling = cfg.eval.sampling
        self.scorer = HFScorer(self.model, self.processor, prompt_spec(cfg),
                               vision_cache=VisionCache(size=2 * self.chunk))

    def prepare(self, job: EvalJob) -> EvalJob:
        """Processor inputs of the job's questions (pixel values once); the frames themselves are let go."""
        inputs = self.scorer.prepare([q.record for q in job.questions], job.frames, hint=job.variant.hint)
        return replace(job, frames=None, inputs=inputs)

    def score(self, jobs: list[EvalJob]) -> list[list[dict]]:
        """Records of every job; the jobs of one variant (model, prompt) are scored together."""
        out: list = [None] * len(jobs)
        by_variant: dict[Variant, list[int]] = {}
        for j, job in enumerate(jobs):
            by_variant.setdefault(job.variant, []).append(j)
        for v, js in by_variant.items():
            for j, recs in zip(js, self._score_variant(v, [jobs[j] for j in js])):
                out[j] = recs
        return out

    def _score_variant(self, v: Variant, jobs: list[EvalJob]) -> list[list[dict]]:
        import contextlib

        ctx = self.model.disable_adapter() if (self.has_adapter and not v.adapter) else contextlib.nullcontext()
        # vision features are shared by the base and the adapter unless the adapter touches the vision tower
        keys = [None if not job.with_video else (job.video, job.condition) if self.share_vision
                else (job.video, job.condition, v.adapter) for job in jobs]
        with ctx:
            results = self.scorer.score_many([job.inputs for job in jobs], keys, greedy=self.rule == "greedy",
                                             first_logprobs=True)
            # the study's decoding: one sampled answer per question besides the scores (which cost one forward
            # of the choice rows)
            drawn = [self.scorer.sample(job.inputs, self.sampling, [sample_seed(self.sampling.seed, q.id)
                                                                    for q in job.questions])
                     if self.rule == "sampled" else None for job in jobs]
        return [[self._record(v, q, r, it, dr[k] if dr else None)
                 for k, (q, r, it) in enumerate(zip(job.questions, res, job.inputs["items"]))]
                for job, res, dr in zip(jobs, results, drawn)]

    def _record(self, v: Variant, q: Question, r, it, drawn) -> dict:
        """One prediction line: scores per choice (a repeated choice string gets its string's score), the pick
        mapped back to the question's choices (the first copy of the picked string)."""
        back, texts, choices = it["back"], it["texts"], list(q.choices)
        extra = {"greedy_index": choices.index(texts[r.greedy_index])} if r.greedy_index is not None else {}
        if drawn is not None:
            text, tokens = drawn
            pick = match_choice(text, choices)
            extra.update(text=text, tokens=tokens, sampling_seed=sample_seed(self.sampling.seed, q.id),
                         constrained=self.sampling.constrained)
        else:
            c = r.choice(self.rule)  # None: greedy decoding ran out of tokens before a choice was complete
            pick = None if c is None else choices.index(texts[c])
        return record(q.record, v.model, v.label, round_scores(expand(r.scores, back)),
                      round_scores(expand(r.mean_scores, back)), pick, rule=self.rule, backend="hf",
                      answer_index=q.answer_index, **extra, prompt_tokens=len(it["input_ids"]),
                      prompt_ids_sha=prompt_ids_sha(it["input_ids"]),
                      first_logprobs=_top(self.scorer.grammar_logprobs(r.first_logprobs, texts)))

    def close(self) -> None:
        """Let the model go (and, on a GPU, its cached memory)."""
        import torch

        self.model = self.processor = self.scorer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _hf_backend(cfg: ExperimentConfig, request: EvalRequest) -> Backend:
    return HFBackend(cfg, request.model_path, request.adapter, request.device)


def _vllm_backend(cfg: ExperimentConfig, request: EvalRequest) -> Backend:
    from cuelab.evaluate.vllm import VLLMBackend

    return VLLMBackend(cfg, request.model_path, request.adapter, server=request.server,
                       videos_root=request.videos_root)


#: eval.backend name -> the factory of its Backend; a new backend is one line here
BACKENDS: dict[str, Callable[[ExperimentConfig, EvalRequest], Backend]] = {"hf": _hf_backend, "vllm": _vllm_backend}


def make_backend(cfg: ExperimentConfig, request: EvalRequest) -> Backend:
    if request.backend not in BACKENDS:
        raise DataError(f"unknown backend {request.backend!r} ({', '.join(BACKENDS)})", field="eval.backend")
    return BACKENDS[request.backend](cfg, request)


# ---------------------------------------------------------------------------------------------------------------
# vLLM in its own venv
# ---------------------------------------------------------------------------------------------------------------

def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def vllm_python() -> Path | None:
    """The vLLM venv's interpreter: $CUELAB_VLLM_PYTHON or .venv-vllm/bin/python at the repo root."""
    p = os.environ.get("CUELAB_VLLM_PYTHON")
    cand = Path(p) if p else ROOT / ".venv-vllm" / "bin" / "python"
    return cand if cand.is_file() else None


def _run_in_vllm_venv(cfg: ExperimentConfig, request: EvalRequest) -> dict:
    py = vllm_python()
    if py is None:
        raise DataError("the vllm backend needs vLLM: run scripts/setup_vllm.sh (creates .venv-vllm) or set "
                        "CUELAB_VLLM_PYTHON, or pass --vllm-server URL", field="eval.backend")
    job = {"config": json.loads(cfg.model_dump_json()), "request": request.to_json()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep))
    with tempfile.TemporaryDirectory() as tmp:
        job["summary_path"] = str(Path(tmp) / "summary.json")
        proc = subprocess.run([str(py), "-m", "cuelab.evaluate.run", json.dumps(job)], env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"the vLLM worker ({py}) failed with exit code {proc.returncode}; see its log above")
        return json.loads(Path(job["summary_path"]).read_text())


def _main(argv: list[str]) -> None:
    """Worker entry (inside the vLLM venv): one JSON job on the command line; the summary goes to a file."""
    job = json.loads(argv[0])
    cfg = ExperimentConfig.model_validate(job["config"])
    # the parent holds out_dir's lock while this runs, and writes the results
    request = replace(EvalRequest.from_json(job["request"]), backend="vllm", write_results=False, lock=False)
    Path(job["summary_path"]).write_text(json.dumps(run_eval(cfg, request)))


if __name__ == "__main__":
    _main(sys.argv[1:])
