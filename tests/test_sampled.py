"""`eval.rule: sampled` (the first study's decoding) in the hf backend, and duplicate choices scored, not failed:
- constrained sampling always answers with one of the choices; the same seed gives the same answers, whatever
  the order the questions come in; free text at a high temperature can miss every choice and is scored wrong;
- vLLM's presence penalty (output tokens only);
- the study's published question file with repeated choice strings: `cuelab questions --from-first-study`, then
  `cuelab eval --blind`: every question scored, none failed.
(The vLLM backend's sampled rule is tested in tests/test_eval_vllm.py.)"""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from cuelab.config import ExperimentConfig, SamplingConfig
from cuelab.evaluate.hf import HFScorer, _presence_penalty_processor, choice_trie
from cuelab.evaluate.predictions import is_correct, match_choice, read_predictions, sample_seed
from cuelab.evaluate.run import evaluate
from cuelab.model.tiny import build_tiny, build_tiny_model, small_test_config
from tests.test_eval_hf import QUESTIONS, _frames, eval_data  # noqa: F401 - the shared fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, processor = build_tiny(small_test_config())
    return model.eval(), processor


def test_presence_penalty_is_vllms():
    """The penalty comes off every token already generated (once, however often), never off prompt tokens."""
    proc = _presence_penalty_processor(1.5, prompt_len=3)
    scores = torch.zeros(1, 10)
    scores[0, 9] = float("-inf")  # a token the choice constraint masked stays masked
    out = proc(torch.tensor([[1, 2, 3, 5, 5, 7, 9]]), scores.clone())
    assert out[0, 5] == out[0, 7] == -1.5 and out[0, 9] == float("-inf")
    assert out[0, [0, 1, 2, 3, 4, 6, 8]].tolist() == [0.0] * 7
    assert torch.equal(proc(torch.tensor([[1, 2, 3]]), scores.clone()), scores)  # nothing generated yet


def test_presence_penalty_stops_the_tiny_models_repeats(tiny):
    model, processor = tiny
    scorer = HFScorer(model, processor)
    prepared = scorer.prepare(QUESTIONS, None)
    greedy = SamplingConfig(temperature=0.0, constrained=False, presence_penalty=0.0)
    tokens = [t for _, t in scorer.sample(prepared, greedy, [0, 0, 0])]
    assert any(len(set(t)) < len(t) for t in tokens)  # greedy free text repeats tokens on this model
    penalised = [t for _, t in scorer.sample(prepared, greedy.model_copy(update={"presence_penalty": 1.5}),
                                              [0, 0, 0])]
    assert all(len(set(t)) == len(t) == 16 for t in penalised)


def test_constrained_sampling_gives_a_choice_and_the_same_seed_the_same_answers(tiny):
    model, processor = tiny
    scorer = HFScorer(model, processor)
    prepared = scorer.prepare(QUESTIONS, _frames())
    hot = SamplingConfig(temperature=5.0)  # far from greedy: the draws differ with the seed
    state = torch.random.get_rng_state()
    runs = {seed: scorer.sample(prepared, hot, [seed] * 3) for seed in range(6)}
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left as it was
    for seed, answers in runs.items():
        for q, (text, toks) in zip(QUESTIONS, answers):
            assert text in q["choices"] and toks[-1] == scorer.end_id
        assert scorer.sample(prepared, hot, [seed] * 3) == answers  # the same seed: the same answers
    assert len({a[0][0] for a in runs.values()}) >= 2  # and the seed matters
    # the constraint follows each choice's token path, and the end token closes every path
    trie = choice_trie([[5, 6, 1], [5, 7, 1], [8, 1]])
    assert trie[()] == [5, 8] and trie[(5,)] == [6, 7] and trie[(5, 6)] == [1] and trie[(8,)] == [1]


def test_match_seed_and_correctness_rules():
    assert match_choice(" pen\n", ["comb", "pen"]) == 1 and match_choice("a pen", ["comb", "pen"]) == -1
    assert match_choice("comb", ["comb", "pen", "comb"]) == 0
    assert sample_seed(3407, "q7") == 3407 + zlib.crc32(b"q7") != sample_seed(3407, "q8")
    q = {"choices": ["comb", "pen", "comb", "cup"], "answer_index": 2}
    assert is_correct(q, 0) and is_correct(q, 2) and not is_correct(q, 1) and not is_correct(q, -1)


def _sampled(**sampling):
    return ExperimentConfig.model_validate({"eval": {"rule": "sampled", "sampling": sampling}})


def test_eval_sampled_constrained_is_a_choice_and_reproducible_in_any_order(eval_data, tmp_path):  # noqa: F811
    qs = eval_data["test"][:8]
    cfg = _sampled(temperature=1.0)
    evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], eval_data["videos"],
             tmp_path / "a", ["plain"], True, False, progress=False, limit=len(qs))
    # the same questions in reverse order (a resumed or re-sharded run meets them in another order)
    rev = tmp_path / "reversed.jsonl"
    rev.write_text("".join(json.dumps(q) + "\n" for q in reversed(qs)))
    evaluate(cfg, eval_data["model"], None, "pretrained", rev, eval_data["videos"], tmp_path / "b", ["plain"],
             True, False, progress=False)
    by_id = {q["id"]: q for q in qs}
    for cond in ("plain", "blind"):
        a = {r["question_id"]: r for r in read_predictions(tmp_path / "a" / "predictions" /
                                                            f"pretrained__{cond}.jsonl")}
        b = {r["question_id"]: r for r in read_predictions(tmp_path / "b" / "predictions" /
                                                            f"pretrained__{cond}.jsonl")}
        assert set(a) == set(b) == set(by_id)
        for qid, r in a.items():
            q = by_id[qid]
            assert r["rule"] == "sampled" and r["constrained"] and not r.get("failed")
            assert q["choices"][r["choice_index"]] == r["text"]  # always one of the choices
            assert r["correct"] == (r["text"] == q["answer"])
            assert r["sampling_seed"] == 3407 + zlib.crc32(qid.encode())
            assert len(r["scores"]) == len(q["choices"])  # the log-likelihoods come along
            assert (r["text"], r["tokens"]) == (b[qid]["text"], b[qid]["tokens"])
    # temperature 1 on the tiny model: not every answer is the top-scored choice (it did sample)
    recs = read_predictions(tmp_path / "a" / "predictions" / "pretrained__plain.jsonl")
    assert any(r["choice_index"] != max(range(4), key=lambda i: r["scores"][i]) for r in recs)


def test_eval_sampled_free_text_can_miss_and_is_wrong_not_failed(eval_data, tmp_path):  # noqa: F811
    cfg = _sampled(temperature=3.0, constrained=False)
    n = 8
    summary = evaluate(cfg, eval_data["model"], None, "pretrained", eval_data["questions"], None, tmp_path,
                       ["blind"], True, False, progress=False, limit=n)
    assert summary["scored"] == n and summary["failed"] == 0
    recs = read_predictions(tmp_path / "predictions" / "pretrained__blind.jsonl")
    missed = [r for r in recs if r["choice_index"] == -1]
    assert missed and all(not r["correct"] and not r.get("failed") and r["text"] for r in missed)
    row = next(r for r in summary["results"]["accuracy"] if r["kind"] == "all")
    assert row["n"] == n and row["failed"] == 0


def _study_record(video, qtype, question, choices, answer):
    """One record of the study's qwen_format_test.json (annotate.py's layout)."""
    human = ("<video>\nLook at the video, and then fill in the blank accordingly from one of the given choices "
             f"Only output the correct answer. \n{question}. \nChoices: {choices}")
    return {"video": f"{video}.mp4", "conversations": [{"from": "human", "value": human},
                                                       {"from": "gpt", "value": answer}],
            "metadata": {"question": question, "choices": choices, "answer": answer, "video": video, "type": qtype}}


def test_first_study_file_with_duplicate_choices_is_scored_not_failed(tmp_path):
    records = [
        _study_record("1001", "object", "putting _____ into box", ["comb", "pen", "comb", "cup"], "comb"),
        _study_record("1001", "object", "putting comb into _____", ["box", "box", "box", "jar"], "box"),
        _study_record("1001", "verb", "_____ comb into box", ["putting", "taking", "putting", "pushing"], "putting"),
        _study_record("1002", "verb", "_____ cup", ["lifting", "pushing", "pulling", "turning"], "turning"),
    ]
    study = tmp_path / "qwen_format_test.json"
    study.write_text(json.dumps(records, indent=True))
    build_tiny_model(tmp_path / "tiny", small_test_config())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "cuelab.cli"]
    res = subprocess.run(cli + ["questions", "--from-first-study", str(study), "--out", str(tmp_path / "qs")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run(cli + ["eval", "--model", str(tmp_path / "tiny"), "--questions",
                                str(tmp_path / "qs" / "test.jsonl"), "--conditions", "blind", "--blind", "--out",
                                str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = read_predictions(tmp_path / "out" / "predictions" / "pretrained__blind.jsonl")
    assert len(recs) == 4 and not any(r.get("failed") for r in recs)
    both = [r for r in recs if r["question_id"].startswith("1001-object")]
    assert all(r["scores"][0] == r["scores"][2] for r in both[:1])  # a repeated string: one answer, one score
    assert both[1]["correct"] == (both[1]["choice_index"] in (0, 1, 2))  # "box" three times: any copy is right
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    row = next(r for r in results["accuracy"] if r["kind"] == "all")
    assert row["n"] == 4 and row["failed"] == 0
