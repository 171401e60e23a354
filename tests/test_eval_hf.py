"""hf backend: the fast path (shared prefix cache, batched choices, shared vision features) gives the scores of
one full forward per choice; the greedy rule is vLLM's grammar rule; `cuelab eval` survives a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cuelab.evaluate.hf import HFScorer, TokenBytes, VisionCache, reference_scores
from cuelab.evaluate.predictions import read_predictions
from cuelab.model.prompt import build_inputs, end_token_id
from cuelab.model.tiny import build_tiny, small_test_config
from cuelab.video.io import FrameSpec, Video, sample_frames
from tests.family_fixtures import QUESTIONS as FAMILY_QUESTIONS

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    *FAMILY_QUESTIONS,
    {"id": "q3", "video": "v1", "kind": "referential", "question": "Which object follows the drawn trajectory?",
     "choices": ["a", "the blue ball", "green", "star"], "answer": "a", "answer_index": 0},
]


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    video = Video(rng.integers(0, 255, (24, 64, 96, 3), dtype=np.uint8), 12.0, "v1.mp4")
    return sample_frames(video, FrameSpec(fps=4.0, min_frames=4, max_frames=8, total_pixels=None,
                                          max_pixels_per_frame=64 * 96), video_id="v1")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, processor = build_tiny(small_test_config())
    return model.eval(), processor


def _close(fast, ref, tol=1e-3):
    assert np.max(np.abs(np.array(fast.scores) - np.array(ref.scores))) < tol
    assert np.max(np.abs(np.array(fast.mean_scores) - np.array(ref.mean_scores))) < tol


@pytest.mark.parametrize("question_first,hint,blind,pack", [(False, False, False, False), (True, False, False, False),
                                                            (False, True, False, False), (False, False, True, False),
                                                            (False, False, False, True), (True, False, False, True)])
def test_fast_path_equals_one_forward_per_choice(tiny, question_first, hint, blind, pack):
    model, processor = tiny
    frames = None if blind else _frames()
    scorer = HFScorer(model, processor, question_first=question_first, pack_choices=pack)
    results = scorer.score(scorer.prepare(QUESTIONS, frames, hint=hint), vision_key=("v1", "plain"))
    for q, fast in zip(QUESTIONS, results):
        ref = reference_scores(model, processor, q, frames, hint=hint, question_first=question_first)
        _close(fast, ref)
        assert fast.n_tokens == ref.n_tokens and all(n >= 2 for n in fast.n_tokens)  # choice + <|im_end|>
    # different questions give different scores (the comparison is not vacuous)
    assert results[0].scores != results[1].scores


def _frames_sized(seed, h, w):
    rng = np.random.default_rng(seed)
    video = Video(rng.integers(0, 255, (24, h, w, 3), dtype=np.uint8), 12.0, "v.mp4")
    return sample_frames(video, FrameSpec(fps=4.0, min_frames=4, max_frames=8, total_pixels=None,
                                          max_pixels_per_frame=h * w), video_id="v")


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_several_videos_in_one_call_score_as_one_at_a_time(tiny, monkeypatch, shared_prefix):
    """score_many: one vision call for every new video; same-length prefixes batched, rows on their own video's
    prefix (read in place, or from a per-row copy of the cache); a blind video and a differently sized one in
    the same call; every score equals the reference."""
    model, processor = tiny
    videos = [(_frames_sized(0, 64, 96), QUESTIONS), (_frames_sized(2, 64, 96), QUESTIONS[:2]),
              (None, QUESTIONS[1:]), (_frames_sized(3, 32, 96), QUESTIONS[::2])]
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=8), shared_prefix=shared_prefix)
    calls = []
    inner = model.model
    orig = inner.get_video_features
    monkeypatch.setattr(inner, "get_video_features", lambda *a, **k: calls.append(1) or orig(*a, **k))
    prepared = [scorer.prepare(qs, fr) for fr, qs in videos]
    many = scorer.score_many(prepared, [("a", "plain"), ("b", "plain"), None, ("d", "plain")])
    assert len(calls) == 1  # three videos through the vision tower together
    assert [len(r) for r in many] == [3, 2, 2, 2]
    for (fr, qs), results in zip(videos, many):
        for q, fast in zip(qs, results):
            _close(fast, reference_scores(model, processor, q, fr), tol=1e-4)
    # videos differ, so do their scores: rows did not read another video's prefix
    assert max(abs(a - b) for a, b in zip(many[0][0].scores, many[1][0].scores)) > 1e-3


def test_lora_base_and_adapter_share_vision_features(tiny):
    from peft import LoraConfig, get_peft_model

    from cuelab.evaluate.hf import vision_is_adapted

    base, processor = build_tiny(small_test_config())
    torch.manual_seed(1)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False)).eval()
    assert not vision_is_adapted(lora)
    cache = VisionCache()
    scorer = HFScorer(lora, processor, vision_cache=cache)
    frames = _frames(1)
    prepared = scorer.prepare(QUESTIONS, frames)
    tuned = scorer.score(prepared, vision_key=("v1", "box"))
    with lora.disable_adapter():
        plain = scorer.score(prepared, vision_key=("v1", "box"))
        ref_base = [reference_scores(lora, processor, q, frames) for q in QUESTIONS]
    ref_tuned = [reference_scores(lora, processor, q, frames) for q in QUESTIONS]
    assert cache.misses == 1 and cache.hits == 1  # the vision tower ran once for both models
    for f, r in zip(tuned + plain, ref_tuned + ref_base):
        _close(f, r)
    assert max(abs(a - b) for a, b in zip(tuned[0].scores, plain[0].scores)) > 1e-3  # the adapter matters


def _naive_greedy(model, processor, question, frames):
    """Full forward per step; allowed tokens found by decoding every vocabulary entry."""
    tok = processor.tokenizer
    special = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
    texts = {i: tok.decode([i]) for i in range(len(tok)) if i not in special}
    end = end_token_id(processor)
    inp = build_inputs(processor, question, frames)
    done, out = "", []
    for _ in range(40):
        logits = model(**inp).logits[0, -1]
        cand = [i for i, t in texts.items() if t and any(c.startswith(done + t) for c in question["choices"])]
        cand += [end] if done in question["choices"] else []
        best = max(cand, key=lambda i: logits[i].item())
        out.append(best)
        if best == end:
            break
        done += texts[best]
        one = torch.tensor([[best]])
        inp = {**inp, "input_ids": torch.cat([inp["input_ids"], one], 1),
               "attention_mask": torch.cat([inp["attention_mask"], torch.ones_like(one)], 1),
               "mm_token_type_ids": torch.cat([inp["mm_token_type_ids"], torch.zeros_like(one)], 1)}
    return question["choices"].index(done) if done in question["choices"] else None, out


def test_greedy_rule_is_constrained_greedy_decoding(tiny):
    model, processor = tiny
    frames = _frames()
    scorer = HFScorer(model, processor)
    fast = scorer.score(scorer.prepare(QUESTIONS, frames), greedy=True)
    for q, r in zip(QUESTIONS, fast):
        with torch.no_grad():
            idx, toks = _naive_greedy(model, processor, q, frames)
        assert (r.greedy_index, r.greedy_tokens) == (idx, toks)
        assert r.greedy_tokens[-1] == end_token_id(processor)
    # the allowed set holds every token that is a byte prefix of a remaining choice, not only canonical ones
    tb = TokenBytes(processor.tokenizer)
    allowed, complete = tb.allowed(b"Lift", [b"Lifting up", b"Lifting", b"Pushing"])
    decoded = {processor.tokenizer.decode([i]) for i in allowed}
    assert {"i", "in", "ing"} <= decoded and not complete and " up" not in decoded
    assert tb.allowed(b"Lifting", [b"Lifting up", b"Lifting"])[1]


# --- the eval command end to end ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_data(synth_dir, tmp_path_factory):
    """Questions of the synthetic set (test split), plain + box renders, a tiny model folder."""
    from cuelab.config import QuestionsConfig
    from cuelab.data.questions import build_questions, read_inputs, write_questions
    from cuelab.model.tiny import build_tiny_model
    from cuelab.video.render import render_videos

    root = tmp_path_factory.mktemp("evaldata")
    labels, tracks, report = read_inputs(synth_dir / "labels.json", synth_dir / "annotations.json")
    train, test, manifest = build_questions(labels, tracks, QuestionsConfig(test_videos=6, seed=0))
    write_questions(root / "questions", train, test, manifest)
    vids = sorted({q["video"] for q in test})
    render_videos(synth_dir / "videos", tracks, ["plain", "box"], root / "videos", workers=1, video_ids=vids,
                  progress=False)
    build_tiny_model(root / "tiny", small_test_config())
    return {"root": root, "questions": root / "questions" / "test.jsonl", "videos": root / "videos",
            "model": root / "tiny", "test": test, "video_ids": vids}


def _eval_cmd(data, out, *extra):
    return [sys.executable, "-m", "cuelab.cli", "eval", "--model", str(data["model"]), "--questions",
            str(data["questions"]), "--videos", str(data["videos"]), "--conditions", "plain,box", "--out",
            str(out), "--blind", *extra]


def test_eval_killed_and_rerun_scores_every_question_once(eval_data, tmp_path):
    # one rendered video is corrupt: its questions are recorded as failed, the run goes on
    bad = eval_data["video_ids"][-1]
    box_dir = tmp_path / "videos"
    for cond in ("plain", "box"):
        (box_dir / cond).mkdir(parents=True)
        for f in (eval_data["videos"] / cond).glob("*.mp4"):
            shutil.copy(f, box_dir / cond / f.name)  # (a symlink out of the folder is refused)
    (box_dir / "box" / f"{bad}.mp4").unlink()
    (box_dir / "box" / f"{bad}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    data = {**eval_data, "videos": box_dir}
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(_eval_cmd(data, out, "--hint"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / "predictions" / "pretrained__plain.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if first.is_file() and len(first.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_test = len(eval_data["test"])
    done_before = sum(len(read_predictions(p)) for p in (out / "predictions").glob("*.jsonl"))
    assert 0 < done_before < 6 * n_test
    res = subprocess.run(_eval_cmd(data, out, "--hint"), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    files = sorted(p.name for p in (out / "predictions").glob("*.jsonl"))
    assert files == sorted(f"pretrained__{c}.jsonl" for c in ("plain", "box", "blind", "plain+hint", "box+hint",
                                                                 "blind+hint"))
    ids = sorted(q["id"] for q in eval_data["test"])
    for p in (out / "predictions").glob("*.jsonl"):
        lines = [json.loads(x) for x in p.read_text().splitlines()]  # no partial line left
        assert sorted(r["question_id"] for r in lines) == ids, p.name  # each question exactly once
    box = read_predictions(out / "predictions" / "pretrained__box.jsonl")
    failed = [r for r in box if r.get("failed")]
    assert failed and {r["video"] for r in failed} == {bad} and "VideoError" in failed[0]["error"]
    ok = [r for r in box if not r.get("failed")]
    assert all(len(r["scores"]) == 4 and r["choice_index"] == int(np.argmax(r["scores"])) for r in ok)
    results = json.loads((out / "results.json").read_text())
    row = next(r for r in results["accuracy"] if r["condition"] == "box" and r["kind"] == "all")
    assert row["failed"] == len(failed) and row["n"] == n_test - len(failed)
    assert (out / "results.csv").read_text().startswith("model,condition,kind,n,correct,failed,accuracy")
    # a third run has nothing left to do and changes no file
    before = {p.name: p.read_bytes() for p in (out / "predictions").glob("*.jsonl")}
    res = subprocess.run(_eval_cmd(data, out, "--hint"), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "scored 0" in res.stderr
    assert before == {p.name: p.read_bytes() for p in (out / "predictions").glob("*.jsonl")}


def test_evaluate_python_entry_adapter_and_base_in_one_pass(eval_data, tmp_path):
    from peft import LoraConfig, get_peft_model

    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.run import evaluate
    from cuelab.model.load import load_model

    model, _ = load_model(eval_data["model"], dtype="float32")
    torch.manual_seed(2)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    cfg = ExperimentConfig()
    summary = evaluate(cfg, eval_data["model"], tmp_path / "adapter", "finetuned", eval_data["questions"],
                       eval_data["videos"], tmp_path / "out", ["plain"], False, False, base_name="pretrained",
                       progress=False)
    n = len(eval_data["test"])
    assert summary["scored"] == 2 * n and summary["failed"] == 0
    tuned = read_predictions(tmp_path / "out" / "predictions" / "finetuned__plain.jsonl")
    base = read_predictions(tmp_path / "out" / "predictions" / "pretrained__plain.jsonl")
    assert len(tuned) == len(base) == n and tuned[0]["scores"] != base[0]["scores"]
    # the base rows equal a separate run of the base model alone
    alone = evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], eval_data["videos"],
                     tmp_path / "alone", ["plain"], False, False, progress=False)
    assert alone["scored"] == n
    solo = read_predictions(tmp_path / "alone" / "predictions" / "pretrained__plain.jsonl")
    assert np.allclose([r["scores"] for r in solo], [r["scores"] for r in base], atol=1e-3)
    comp = summary["results"]["comparisons"]
    assert any(c["model"] == "finetuned" and c["vs_model"] == "pretrained" for c in comp)


def test_first_study_prompt_scores_choice_and_end_token(tiny):
    """Under model.prompt first_study the choices are scored as today: choice + <|im_end|> (the newline the study
    trained on after the end token is not part of the answer), on the study's prompt; fast path = reference."""
    from cuelab.model.prompt import PromptSpec, answer_token_ids

    model, processor = tiny
    frames, spec = _frames(), PromptSpec(style="first_study")
    scorer = HFScorer(model, processor, spec)
    prepared = scorer.prepare(QUESTIONS, frames)
    study_prompt = build_inputs(processor, QUESTIONS[0], frames, spec=spec)["input_ids"][0]
    assert torch.equal(prepared["items"][0]["input_ids"], study_prompt)
    assert not torch.equal(study_prompt, build_inputs(processor, QUESTIONS[0], frames)["input_ids"][0])
    results = scorer.score(prepared)
    for q, fast in zip(QUESTIONS, results):
        ref = reference_scores(model, processor, q, frames, spec=spec)
        _close(fast, ref)
        assert fast.n_tokens == [len(answer_token_ids(processor, c)) for c in q["choices"]]


def test_duplicate_choice_strings_are_one_answer(tiny, tmp_path):
    """A question whose choices repeat a string (the first study's questions do) is scored, not failed: the
    distinct strings are scored, both copies get their string's score, the pick is right when its string is the
    answer's (whichever copy answer_index names)."""
    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.run import evaluate

    model, processor = tiny
    q = {"id": "d1", "video": "v1", "kind": "object", "question": "putting _____ into box",
         "choices": ["comb", "pen", "comb", "cup"], "answer": "comb", "answer_index": 2}
    scorer = HFScorer(model, processor)
    prepared = scorer.prepare([q], _frames())
    assert prepared["items"][0]["texts"] == ["comb", "pen", "cup"]
    assert len(scorer.score(prepared)[0].scores) == 3
    # end to end (blind): every rule, not failed; scores per choice with the copies equal
    from cuelab.model.tiny import build_tiny_model

    path, model_dir = tmp_path / "q.jsonl", tmp_path / "tiny"
    path.write_text(json.dumps(q) + "\n")
    build_tiny_model(model_dir, small_test_config())
    for rule in ("sum", "greedy", "sampled"):
        out = tmp_path / rule
        cfg = ExperimentConfig.model_validate({"eval": {"rule": rule}})
        summary = evaluate(cfg, model_dir, None, "pretrained", path, None, out, ["blind"], True, False,
                           progress=False)
        assert summary["scored"] == 1 and summary["failed"] == 0, rule
        rec = read_predictions(out / "predictions" / "pretrained__blind.jsonl")[0]
        assert rec["scores"][0] == rec["scores"][2] and len(rec["scores"]) == 4
        picked = q["choices"][rec["choice_index"]]
        assert rec["choice_index"] == q["choices"].index(picked)  # the first copy of the picked string
        assert rec["correct"] == (picked == "comb")
