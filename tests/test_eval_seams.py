"""The eval stage's seams: EvalRequest (what evaluate() was asked), EvalJob (one video's questions for one
variant) and the Backend protocol both backends implement; a backend that only honours the protocol runs in the
real loop."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from cuelab.config import ExperimentConfig
from cuelab.evaluate import run as R
from cuelab.evaluate.predictions import read_predictions, record
from cuelab.question import Question

QUESTIONS = [
    {"id": "a1", "video": "va", "kind": "object", "question": "What?", "choices": ["x", "y"], "answer_index": 1},
    {"id": "a2", "video": "va", "kind": "verb", "question": "How?", "choices": ["p", "q", "r"], "answer_index": 0},
    {"id": 3, "video": "vb", "kind": "object", "question": "Which?", "choices": ["only one"], "answer_index": 0},
    {"id": "b2", "video": "vb", "kind": "object", "question": "Who?", "choices": ["m", "n"], "answer_index": 1},
]


def test_both_backends_satisfy_the_protocol():
    from cuelab.evaluate.vllm import VLLMBackend

    for cls in (R.HFBackend, VLLMBackend):
        assert isinstance(object.__new__(cls), R.Backend), cls.__name__


def test_the_vllm_backend_module_imports_without_vllm():
    code = ("import sys; import cuelab.evaluate.vllm as v, cuelab.evaluate.run as r; "
            "assert 'vllm' not in sys.modules; "
            "print(isinstance(object.__new__(v.VLLMBackend), r.Backend))")
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: its absence cannot be checked")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_real_hf_backend_and_a_server_client_are_backends(tmp_path):
    from cuelab.evaluate.vllm import VLLMBackend
    from cuelab.model.tiny import build_tiny_model, small_test_config

    build_tiny_model(tmp_path / "tiny", small_test_config())
    cfg = ExperimentConfig()
    hf = R.HFBackend(cfg, tmp_path / "tiny", device="cpu")
    client = VLLMBackend(cfg, tmp_path / "tiny", server="http://127.0.0.1:9")  # no engine: a server's client
    assert isinstance(hf, R.Backend) and isinstance(client, R.Backend) and (hf.chunk, client.chunk) == (1, 8)
    hf.close()
    client.close()


class FakeBackend:
    """Honours the protocol only: picks the last choice, with made-up scores."""

    chunk, workers = 2, 1

    def __init__(self):
        self.prepared, self.scored, self.closed = [], [], 0

    def prepare(self, job: R.EvalJob) -> R.EvalJob:
        assert all(isinstance(q, Question) and q.problem is None for q in job.questions)
        self.prepared.append((job.variant.label, job.video))
        return R.EvalJob(job.variant, job.video, job.condition, job.questions, inputs=len(job.questions))

    def score(self, jobs: list[R.EvalJob]) -> list[list[dict]]:
        self.scored.append(len(jobs))
        return [[record(q.record, j.variant.model, j.variant.label, [0.0] * len(q.choices), None,
                        len(q.choices) - 1) for q in j.questions] for j in jobs]

    def close(self) -> None:
        self.closed += 1


def test_a_protocol_backend_runs_in_the_real_loop(tmp_path, monkeypatch):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    fake = FakeBackend()
    assert isinstance(fake, R.Backend)
    monkeypatch.setattr(R, "make_backend", lambda cfg, request: fake)
    summary = R.evaluate(ExperimentConfig(), "no-model", questions_path=path, out_dir=tmp_path / "out",
                         conditions=["blind"], hint=True, write_results=False, progress=False)
    assert (summary["scored"], summary["failed"], summary["already"]) == (6, 2, 0) and fake.closed == 1
    assert fake.prepared == [(c, v) for v in ("va", "vb") for c in ("blind", "blind+hint")]  # frames once a video
    recs = read_predictions(tmp_path / "out" / "predictions" / "pretrained__blind.jsonl")
    assert [r["question_id"] for r in recs] == [3, "a1", "a2", "b2"]  # a chunk's failed lines come first
    failed = recs[0]
    assert failed["failed"] and failed["error"] == "field 'choices': must be a list of at least 2 non-empty strings"
    assert recs[3]["choice_index"] == 1 and recs[3]["correct"]
    again = R.evaluate(ExperimentConfig(), "no-model", questions_path=path, out_dir=tmp_path / "out",
                       conditions=["blind"], hint=True, write_results=False, progress=False)
    assert again["already"] == 8 and again["scored"] == 0 and fake.closed == 1  # nothing to do: no backend made


def test_evaluate_fills_the_request_from_its_arguments_and_the_config(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(R, "run_eval", lambda cfg, request: seen.append(request) or {})
    cfg = ExperimentConfig.model_validate({"eval": {"conditions": ["plain", "box"], "blind": True,
                                                    "vllm_server": "http://h:1"}})
    R.evaluate(cfg, "m", tmp_path / "ad", None, "q.jsonl", "videos", "out", base_name="pretrained", limit=3)
    r = seen[0]
    assert (r.model_name, r.base_name, r.conditions, r.blind, r.hint, r.backend, r.server, r.limit) == (
        "finetuned", "pretrained", ("plain", "box"), True, False, cfg.eval.backend, "http://h:1", 3)
    assert [v.label for v in r.variants()] == ["plain", "plain", "box", "box", "blind", "blind"]
    back = R.EvalRequest.from_json(json.loads(json.dumps(r.to_json())))  # what the vLLM venv worker gets
    assert back.to_json() == r.to_json() and back.out_dir == r.out_dir and back.shard == r.shard


def test_a_job_knows_whether_it_had_a_video_after_its_frames_are_let_go():
    from dataclasses import replace

    job = R.EvalJob(R.Variant("pretrained", "plain", False, True), "va", "plain", [], frames=object())
    assert job.with_video and replace(job, frames=None, inputs={}).with_video
    assert not R.EvalJob(R.Variant("pretrained", "blind", False, True), "va", "blind", []).with_video
