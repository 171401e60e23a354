"""Answering an outside harness's requests on an exported cuelab benchmark with `cuelab eval`'s own code: the
model loaded and sped up by the eval stage's HFBackend, frames from the one `sample_frames`, prompts from the
one prompt builder, choice scores from HFScorer (the video prefix computed once and shared by every question
and choice of the video). cuelab/export/lmms_model.py adapts lmms-eval's requests to this; nothing here imports
lmms-eval, so the tests can drive it directly too.

A request names its document (an exported row: question_id, video_id, question, choices) and the text the
harness built from it (`doc_to_text`). That text must be the prompt cuelab's builder writes for the question
under the model's config: a task with another prompt, or a config whose `model.prompt` differs from the run the
benchmark came from, is refused rather than scored on a prompt the harness never showed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cuelab.config import ExperimentConfig, SamplingConfig, load_config
from cuelab.errors import DataError
from cuelab.run_layout import RunPaths, base_model_path, finetuned_model

#: the rules whose pick is the choice of highest score, so a harness can pick it as the lowest loss
LOSS_RULES = ("sum", "mean")
DOC_FIELDS = ("question_id", "video_id", "question", "choices")


@dataclass(frozen=True)
class ModelSettings:
    """Which model and which cuelab settings (frames, prompt, dtype, rule) answer the harness."""

    cfg: ExperimentConfig
    model_path: str
    adapter: str | None = None


def model_settings(pretrained: str | None = None, adapter: str | None = None, config: str | None = None,
                   run: str | None = None, model: str = "pretrained") -> ModelSettings:
    """`run` (+ `model`: pretrained | finetuned): a run folder's model and config, as its eval stage scored them;
    else `pretrained` (hub id or folder) with an optional LoRA `adapter` and a cuelab `config` YAML (its frames,
    prompt, dtype and rule; cuelab's defaults without one)."""
    if run is not None:
        if pretrained is not None or adapter is not None or config is not None:
            raise DataError("give run= (a cuelab run folder) or pretrained=/adapter=/config=, not both",
                            field="model_args")
        cfg = load_config(Path(run) / "config.yaml")
        paths = RunPaths(Path(run))
        if model == "pretrained":
            return ModelSettings(cfg, base_model_path(cfg, paths))
        if model == "finetuned":
            path, lora = finetuned_model(cfg, paths)
            return ModelSettings(cfg, path, lora)
        raise DataError(f"model={model!r}: a run folder holds 'pretrained' and 'finetuned'", field="model")
    if pretrained is None:
        raise DataError("name the model: run=RUN_DIR[,model=finetuned] or pretrained=HUB_ID_OR_FOLDER",
                        field="model_args")
    cfg = load_config(config) if config is not None else ExperimentConfig()
    return ModelSettings(cfg, str(pretrained), adapter)


@dataclass
class Request:
    """One harness request: its document, the text the harness built, the visuals, and per kind either the
    continuation (a choice) or the generation settings."""

    doc: dict
    context: str
    visuals: list
    group: Any  # requests of one group (task) and video share frames and are scored together
    continuation: str | None = None
    gen: dict = field(default_factory=dict)

    def record(self) -> dict:
        missing = [k for k in DOC_FIELDS if k not in self.doc]
        if missing:
            raise DataError(f"the document has no {', '.join(missing)}: this model answers tasks exported by "
                            "`cuelab export` only", video_id=str(self.doc.get("video_id")), field=missing[0])
        d = self.doc
        return {"id": str(d["question_id"]), "video": str(d["video_id"]), "question": d["question"],
                "choices": [str(c) for c in d["choices"]]}

    def video(self) -> str | None:
        vis = [v for v in (self.visuals or []) if v is not None]
        if len(vis) > 1:
            raise DataError(f"{len(vis)} visuals for one question; a cuelab question has one video or none",
                            video_id=str(self.doc.get("video_id")), field="doc_to_visual")
        return str(vis[0]) if vis else None


class HarnessScorer:
    """cuelab's eval-stage scorer behind a harness: `loglikelihood` and `generate` over Requests."""

    def __init__(self, settings: ModelSettings, device: str | None = None, rule: str | None = None,
                 greedy: bool = False, progress: bool = True):
        from cuelab.evaluate.run import HFBackend
        from cuelab.model.families import frame_spec
        from cuelab.model.prompt import prompt_spec

        self.settings, self.cfg = settings, settings.cfg
        self.rule = rule or self.cfg.eval.rule
        if self.rule not in LOSS_RULES:
            raise DataError(f"rule {self.rule!r}: a harness picks the choice of lowest loss, which is cuelab's "
                            f"{' or '.join(LOSS_RULES)} rule (pass rule=sum)", field="eval.rule")
        self.backend = HFBackend(self.cfg, settings.model_path, settings.adapter, device)
        self.spec = prompt_spec(self.cfg)
        self.frames = frame_spec(self.cfg.frames_eval, self.backend.processor)
        self.greedy, self.progress = bool(greedy), progress

    # -- shared ------------------------------------------------------------------------------------------------
    def _check_prompt(self, req: Request, record: dict) -> None:
        from cuelab.model.prompt import question_text

        want = question_text(record, self.spec)
        if req.context != want:
            raise DataError(f"question {record['id']}: the harness's prompt is not the text cuelab builds for it "
                            f"under model.prompt={self.cfg.model.prompt!r} (was the task exported from a run with "
                            f"other prompt settings, or given a pre/post prompt?)\nharness: {req.context!r}\n"
                            f"cuelab:  {want!r}", video_id=record["video"], field="doc_to_text")

    def _batches(self, requests: list[Request]) -> list[tuple[str | None, list[int]]]:
        """Request indices grouped by (group, video), in first-appearance order: one frames sample each."""
        out: dict = {}
        for i, r in enumerate(requests):
            out.setdefault((r.group, r.video()), []).append(i)
        return [(video, idx) for (_, video), idx in out.items()]

    def _frames(self, video: str | None, video_id: str):
        from cuelab.video.io import sample_frames

        return None if video is None else sample_frames(video, self.frames, video_id=video_id)

    def _bar(self, total: int, desc: str):
        import sys

        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="video", disable=not self.progress, file=sys.stderr)

    # -- log-likelihood ----------------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Request]) -> list[tuple[float, bool]]:
        """(loss, is_greedy) per request: loss = minus the choice's summed log-likelihood (`mean` rule: per
        token), as lmms-eval's multiple-choice tasks expect (they pick the lowest). is_greedy: with `greedy`,
        whether greedy decoding under the choice grammar gives this choice (cuelab's `greedy` rule, vLLM's
        `choice` at temperature 0); without, whether the rule picks it. The decoding is left out by default: it
        took 2.5x the time of the scoring alone on the quick demo (88 s vs 35 s on this 2-core machine), and the
        exported tasks read only the losses.

        As in `cuelab eval`, the next videos are decoded and put through the processor in worker threads while
        the model scores the current one."""
        from cuelab.evaluate.run import prefetch

        out: list = [None] * len(requests)
        batches = self._batches(requests)
        bar = self._bar(len(batches), "cuelab loglikelihood")
        load = lambda batch: self._prepare(requests, *batch)  # noqa: E731
        for questions, prepared, key in prefetch(load, batches, self.backend.workers):
            self._score_video(requests, questions, prepared, key, out)
            bar.update(1)
        bar.close()
        return out

    def _prepare(self, requests: list[Request], video, idx: list[int]):
        """Worker-thread part of one video: its questions (request indices by question id), checked prompts,
        frames and processor inputs."""
        questions: dict[str, list[int]] = {}
        for i in idx:
            questions.setdefault(requests[i].record()["id"], []).append(i)
        records = [requests[ids[0]].record() for ids in questions.values()]
        for rec, ids in zip(records, questions.values()):
            self._check_prompt(requests[ids[0]], rec)
        prepared = self.backend.scorer.prepare(records, self._frames(video, records[0]["video"]))
        return questions, prepared, None if video is None else ("harness", video)

    def _score_video(self, requests: list[Request], questions: dict[str, list[int]], prepared, key,
                     out: list) -> None:
        results = self.backend.scorer.score_many([prepared], [key], greedy=self.greedy)[0]
        for (qid, ids), res, item in zip(questions.items(), results, prepared["items"]):
            texts = item["texts"]  # the distinct choice strings, as scored
            vals = res.scores if self.rule == "sum" else res.mean_scores
            best = res.greedy_index if self.greedy else res.choice(self.rule)
            for i in ids:
                cont = requests[i].continuation
                if cont not in texts:
                    raise DataError(f"question {qid}: continuation {cont!r} is none of its choices (the task's "
                                    "target_delimiter must be empty)", video_id=requests[i].record()["video"],
                                    field="doc_to_choice")
                j = texts.index(cont)
                out[i] = (-float(vals[j]), best == j)

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, requests: list[Request]) -> list[str]:
        """Text generated for each request by cuelab's sampler (cuelab.evaluate.hf.sample_answer, free text, the
        per-question seed `cuelab eval` uses), cut at the first `until` string; greedy unless the request asks
        for a temperature."""
        from cuelab.evaluate.predictions import sample_seed

        out: list = [None] * len(requests)
        batches = self._batches(requests)
        bar = self._bar(len(batches), "cuelab generate")
        for video, idx in batches:
            records = [requests[i].record() for i in idx]
            for i, rec in zip(idx, records):
                self._check_prompt(requests[i], rec)
            prepared = self.backend.scorer.prepare(records, self._frames(video, records[0]["video"]))
            for k, (i, rec) in enumerate(zip(idx, records)):
                one = {"items": [prepared["items"][k]], "pixels": prepared["pixels"]}
                sampling = self.sampling(requests[i].gen)
                text, _ = self.backend.scorer.sample(one, sampling, [sample_seed(sampling.seed, rec["id"])])[0]
                out[i] = cut_at(text, requests[i].gen.get("until"))
            bar.update(1)
        bar.close()
        return out

    def sampling(self, gen: dict) -> SamplingConfig:
        """A harness's generation settings as cuelab's SamplingConfig (no presence penalty, no choice grammar)."""
        t = float(gen.get("temperature") or 0.0) if gen.get("do_sample", True) else 0.0
        return SamplingConfig(temperature=t, top_p=float(gen.get("top_p") or 1.0), top_k=-1, presence_penalty=0.0,
                              seed=self.cfg.eval.sampling.seed,
                              max_tokens=int(gen.get("max_new_tokens") or self.cfg.eval.sampling.max_tokens),
                              constrained=False)

    def close(self) -> None:
        self.backend.close()


def cut_at(text: str, until) -> str:
    """`text` up to the first of the `until` strings (a harness's stop sequences)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for s in stops:
        if s and s in text:
            text = text[:text.index(s)]
    return text
