"""The eval stage, top to bottom: questions -> per condition, per video: frames once -> every model and prompt
variant scores the video's questions -> prediction lines appended -> results table.

Resumable: each (model, condition) file is opened with the ids it already holds, and only missing questions
are scored (a video whose questions are all done is not even decoded). A video that fails to load is recorded
as failed for each of its questions. Backends: "hf" (transformers, cuelab.evaluate.hf) and "vllm"
(cuelab.evaluate.vllm; run in the vLLM venv when this interpreter has no vllm).

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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cuelab.config import ExperimentConfig
from cuelab.errors import DataError
from cuelab.evaluate.predictions import (BLIND, PredictionFile, condition_name, expand, match_choice,
                                         predictions_path, prompt_ids_sha, record, sample_seed)
from cuelab.fsutil import read_jsonl
from cuelab.locks import folder_lock
from cuelab.model.data import check_question_names

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


def load_questions(path: str | Path) -> list[dict]:
    """Question records; a record without id or video is a DataError naming the file and line (it cannot
    be recorded); other defects are caught per question when it is scored."""
    path = Path(path)
    if not path.is_file():
        raise DataError("questions file not found", file=str(path))
    out, seen = [], set()
    for n, q in enumerate(read_jsonl(path), 1):
        check_question_names(q, path, n)  # id and video name files: a path-like one is refused here
        if q["id"] in seen:
            raise DataError(f"question id {q['id']!r} appears twice", file=str(path), video_id=q["video"],
                            field="id")
        seen.add(q["id"])
        out.append(q)
    return out


def check_question(q: dict) -> str | None:
    """Why this question cannot be scored, or None."""
    ch = q.get("choices")
    if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) and c for c in ch):
        return "field 'choices': must be a list of at least 2 non-empty strings"
    if not isinstance(q.get("answer_index"), int) or not 0 <= q["answer_index"] < len(ch):
        return "field 'answer_index': not an index into choices"
    if not isinstance(q.get("question"), str):
        return "field 'question': missing"
    return None


def group_by_video(questions: list[dict], shard: tuple[int, int] = (0, 1)) -> list[tuple[str, list[dict]]]:
    """[(video, its questions)] in first-appearance order; shard i/n keeps every n-th video from i."""
    groups: dict[str, list[dict]] = {}
    for q in questions:
        groups.setdefault(q["video"], []).append(q)
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


def _round(xs):
    return [round(float(x), 5) for x in xs] if xs is not None else None


# ---------------------------------------------------------------------------------------------------------------

def evaluate(cfg: ExperimentConfig, model_path, adapter=None, model_name: str | None = None, questions_path=None,
             videos_root=None, out_dir=None, conditions: list[str] | None = None, blind: bool | None = None,
             hint: bool | None = None, *, base_name: str | None = None, backend: str | None = None,
             shard: tuple[int, int] = (0, 1), vllm_server: str | None = None, device: str | None = None,
             limit: int | None = None, write_results: bool = True, progress: bool = True, lock: bool = True) -> dict:
    """Score every question under every condition; append predictions; write results.json/csv in out_dir.

    `adapter` (a LoRA folder) is scored as `model_name` (default "finetuned", else "pretrained"); with
    `base_name` the base model (adapter off) is scored too in the same pass, sharing vision features.
    The whole call holds out_dir's eval lock for this shard (cuelab.locks): a second evaluate into the same folder
    raises FolderBusy before reading or writing anything, where it used to append every line a second time.
    `lock=False` only where the caller already holds it (the vLLM venv worker, run by a locked parent)."""
    ec = cfg.eval
    backend = backend or ec.backend
    conditions = list(conditions if conditions is not None else ec.conditions)
    blind = ec.blind if blind is None else blind
    hint = ec.hint if hint is None else hint
    model_name = model_name or ("finetuned" if adapter else "pretrained")
    if base_name and not adapter:
        raise DataError("base_name needs an adapter (the base is the model with the adapter off)", field="adapter")
    out_dir, videos_root = Path(out_dir), Path(videos_root) if videos_root is not None else None
    with folder_lock(out_dir, "eval", shard) if lock else nullcontext():
        if backend == "vllm" and not (vllm_server or ec.vllm_server) and not _has_vllm():
            summary = _run_in_vllm_venv(cfg, model_path, adapter, model_name, questions_path, videos_root, out_dir,
                                        conditions, blind, hint, base_name, shard, limit)
        else:
            questions = load_questions(questions_path)[:limit]
            summary = _evaluate(cfg, backend, model_path, adapter, model_name, base_name, questions, videos_root,
                                out_dir, variants(conditions, model_name, base_name, blind, hint), shard,
                                vllm_server or ec.vllm_server, device, progress)
        if write_results:
            from cuelab.evaluate.metrics import write_results as _write

            summary["results"] = _write(out_dir / "predictions", out_dir)
    return summary


def _evaluate(cfg, backend, model_path, adapter, model_name, base_name, questions, videos_root, out_dir, vars_,
              shard, server, device, progress) -> dict:
    from tqdm import tqdm

    files = {v: PredictionFile(predictions_path(out_dir, v.model, v.label, shard)) for v in vars_}
    groups = group_by_video(questions, shard)
    counts = {"scored": 0, "failed": 0, "already": 0}
    scorer = None
    t0 = time.time()
    for cond in dict.fromkeys(v.condition for v in vars_):
        cvars = [v for v in vars_ if v.condition == cond]
        todo_groups = []
        for vid, qs in groups:
            todo = {v: files[v].todo(qs) for v in cvars}
            counts["already"] += sum(len(qs) - len(t) for t in todo.values())
            if any(todo.values()):
                todo_groups.append((vid, todo))
        if not todo_groups:
            continue
        if scorer is None:
            scorer = make_backend(cfg, backend, model_path, adapter, server, device, videos_root)
        bar = tqdm(total=len(todo_groups), desc=f"eval {cond}", unit="video", disable=not progress, file=sys.stderr)
        load = partial(_load_video, cfg, scorer, cond, videos_root)
        for chunk in _chunks(prefetch(load, todo_groups, scorer.workers), scorer.chunk):
            jobs = []
            for failed, prepared in chunk:
                for v, recs in failed:
                    files[v].append(recs)
                    counts["failed"] += len(recs)
                jobs += prepared
            for (v, *_), recs in zip(jobs, scorer.score_jobs(jobs)):
                files[v].append(recs)
                counts["scored"] += len(recs)
            bar.update(len(chunk))
        bar.close()
    seconds = time.time() - t0
    return {**counts, "seconds": round(seconds, 2), "backend": backend,
            "files": sorted(str(f.path) for f in files.values())}


def _load_video(cfg, backend, cond, videos_root, group):
    """Worker-thread part of one video: frames (once for every variant), failure records, backend inputs."""
    from cuelab.video.io import find_video, sample_frames

    vid, todo = group
    frames, error = None, None
    if cond != BLIND:
        try:
            frames = sample_frames(find_video(videos_root / cond, vid), cfg.frames_eval.spec(), video_id=vid)
        except Exception as e:  # noqa: BLE001 - any unreadable video is recorded, never fatal
            error = f"{type(e).__name__}: {e}"
    failed, prepared = [], []
    for v, qs in todo.items():
        bad = {q["id"]: error or check_question(q) for q in qs}
        fails = [record(q, v.model, v.label, error=bad[q["id"]]) for q in qs if bad[q["id"]]]
        if fails:
            failed.append((v, fails))
        good = [q for q in qs if not bad[q["id"]]]
        if good:
            prepared.append(backend.prepare((v, vid, cond, good, frames)))
    return failed, prepared


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
# Backends: score_jobs([(variant, video, condition, questions, frames)]) -> [[records]]
# ---------------------------------------------------------------------------------------------------------------

class HFBackend:
    workers = 2  # threads preparing the next videos (decode, frames, processor) while the model runs

    def __init__(self, cfg: ExperimentConfig, model_path, adapter=None, device=None):
        import torch

        from cuelab.evaluate.hf import HFScorer, VisionCache, vision_is_adapted
        from cuelab.model.load import load_model
        from cuelab.model.prompt import prompt_spec
        from cuelab.model.speed import batch_vision_attention

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(cfg.seed)
        # the packed choice rows need a custom attention mask: SDPA (or eager), not flash-attention
        attn = "sdpa" if cfg.model.attn_implementation == "flash_attention_2" else cfg.model.attn_implementation
        self.model, self.processor = load_model(model_path, dtype=cfg.model.dtype, attn_implementation=attn,
                                                device=device, adapter=adapter)
        batch_vision_attention(self.model)
        if cfg.eval.compile and torch.device(device).type == "cuda":
            from cuelab.model.speed import compile_blocks

            compile_blocks(self.model)
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

    def prepare(self, job):
        v, vid, cond, qs, frames = job
        return (v, vid, cond, qs, frames is not None, self.scorer.prepare(qs, frames, hint=v.hint))

    def score_jobs(self, jobs):
        """Records of every job; the jobs of one variant (model, prompt) are scored together."""
        import contextlib

        out = [None] * len(jobs)
        by_variant: dict = {}
        for j, job in enumerate(jobs):
            by_variant.setdefault(job[0], []).append(j)
        for v, js in by_variant.items():
            ctx = self.model.disable_adapter() if (self.has_adapter and not v.adapter) else contextlib.nullcontext()
            keys = [None if not jobs[j][4] else (jobs[j][1], jobs[j][2]) if self.share_vision
                    else (jobs[j][1], jobs[j][2], v.adapter) for j in js]
            with ctx:
                results = self.scorer.score_many([jobs[j][5] for j in js], keys, greedy=self.rule == "greedy",
                                                 first_logprobs=True)
                # the study's decoding: one sampled answer per question besides the scores (which cost one
                # forward of the choice rows)
                drawn = [self.scorer.sample(jobs[j][5], self.sampling, [sample_seed(self.sampling.seed, q["id"])
                                                                         for q in jobs[j][3]])
                         if self.rule == "sampled" else None for j in js]
            for j, res, dr in zip(js, results, drawn):
                qs, items = jobs[j][3], jobs[j][5]["items"]
                out[j] = [self._record(v, q, r, it, dr[k] if dr else None)
                          for k, (q, r, it) in enumerate(zip(qs, res, items))]
        return out

    def _record(self, v, q, r, it, drawn):
        """One prediction line: scores per choice (a repeated choice string gets its string's score), the pick
        mapped back to the question's choices (the first copy of the picked string)."""
        back, texts = it["back"], it["texts"]
        extra = {"greedy_index": q["choices"].index(texts[r.greedy_index])} if r.greedy_index is not None else {}
        if drawn is not None:
            text, tokens = drawn
            pick = match_choice(text, q["choices"])
            extra.update(text=text, tokens=tokens, sampling_seed=sample_seed(self.sampling.seed, q["id"]),
                         constrained=self.sampling.constrained)
        else:
            c = r.choice(self.rule)  # None: greedy decoding ran out of tokens before a choice was complete
            pick = None if c is None else q["choices"].index(texts[c])
        return record(q, v.model, v.label, _round(expand(r.scores, back)), _round(expand(r.mean_scores, back)), pick,
                      rule=self.rule, backend="hf", answer_index=q.get("answer_index"), **extra,
                      prompt_tokens=len(it["input_ids"]), prompt_ids_sha=prompt_ids_sha(it["input_ids"]),
                      first_logprobs=_top(self.scorer.grammar_logprobs(r.first_logprobs, texts)))


def make_backend(cfg, backend, model_path, adapter, server, device, videos_root):
    if backend == "hf":
        return HFBackend(cfg, model_path, adapter, device)
    if backend == "vllm":
        from cuelab.evaluate.vllm import VLLMBackend

        return VLLMBackend(cfg, model_path, adapter, server=server, videos_root=videos_root)
    raise DataError(f"unknown backend {backend!r} (hf, vllm)", field="eval.backend")


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


def _run_in_vllm_venv(cfg, model_path, adapter, model_name, questions_path, videos_root, out_dir, conditions,
                      blind, hint, base_name, shard, limit) -> dict:
    py = vllm_python()
    if py is None:
        raise DataError("the vllm backend needs vLLM: run scripts/setup_vllm.sh (creates .venv-vllm) or set "
                        "CUELAB_VLLM_PYTHON, or pass --vllm-server URL", field="eval.backend")
    job = {"config": json.loads(cfg.model_dump_json()), "model_path": str(model_path),
           "adapter": str(adapter) if adapter else None, "model_name": model_name,
           "questions_path": str(questions_path), "videos_root": str(videos_root) if videos_root else None,
           "out_dir": str(out_dir), "conditions": conditions, "blind": blind, "hint": hint, "base_name": base_name,
           "shard": list(shard), "limit": limit}
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
    summary = evaluate(cfg, job["model_path"], job["adapter"], job["model_name"], job["questions_path"],
                       job["videos_root"], job["out_dir"], job["conditions"], job["blind"], job["hint"],
                       base_name=job["base_name"], backend="vllm", shard=tuple(job["shard"]), limit=job["limit"],
                       write_results=False, lock=False)  # the parent holds out_dir's lock while this runs
    Path(job["summary_path"]).write_text(json.dumps(summary))


if __name__ == "__main__":
    _main(sys.argv[1:])
