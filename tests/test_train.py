"""Training on tiny synthetic questions: the answer loss falls, a crashed run resumes to the same curve,
the adapter reloads, and merged vs adapter give the same choice scores."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cuelab.config import ExperimentConfig, FramesConfig, ModelConfig, PhaseConfig, SyntheticConfig, TrainConfig
from cuelab.errors import DataError
from cuelab.fsutil import read_jsonl, write_jsonl
from cuelab.model.data import FrameCache, SampleEncoder, collate, load_questions, mix, select
from cuelab.model.load import load_model
from cuelab.model.merge import merge_adapter
from cuelab.model.prompt import build_inputs
from cuelab.model.tiny import small_test_config
from cuelab.model.train import TrainState, checkpoints, lora_targets, train

CONDITIONS = ("plain", "box", "trajectory")


def _cues(frames, track, cond):
    """Draw a box or the path so far of object 0 (enough cue rendering for training tests)."""
    frames, pts = frames.copy(), []
    for t in range(len(frames)):
        if t in track:
            x1, y1, x2, y2 = (int(v) for v in track[t])
            pts.append(((x1 + x2) // 2, (y1 + y2) // 2))
            if cond == "box":
                cv2.rectangle(frames[t], (x1, y1), (x2, y2), (255, 0, 0), 1)
            if cond == "trajectory" and len(pts) > 1:
                cv2.polylines(frames[t], [np.array(pts)], False, (255, 0, 0), 1)
    return frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 synthetic videos x 3 conditions, and one verb + one object question per video."""
    from cuelab.data.something_else import load_annotations
    from cuelab.data.ssv2 import load_labels
    from cuelab.data.synthetic import OBJECT_NAMES, generate
    from cuelab.video.io import find_video, read_video, write_video

    root = tmp_path_factory.mktemp("train-data")
    generate(SyntheticConfig(videos=12, seed=1, width=96, height=64, min_seconds=1.0, max_seconds=1.5),
             root / "ds")
    labels = load_labels(root / "ds" / "labels.json")
    tracks = load_annotations(root / "ds" / "annotations.json").videos
    verbs = sorted({e.template.split()[0].lower() for e in labels} | {"lifting", "pushing", "rolling", "poking"})
    rng = np.random.default_rng(0)
    questions = []
    for e in labels:
        colors = {o: "red" for o in tracks[e.id].objects()}
        verb = e.template.split()[0].lower()
        for kind, answer, pool, text in (
                ("verb", verb, verbs, f"_____ the {e.placeholders[0]}."),
                ("object", e.placeholders[0], OBJECT_NAMES, f"{e.template.split()[0]} the _____.")):
            choices = [answer] + [str(c) for c in rng.choice([p for p in pool if p not in e.placeholders
                                                              and p != answer], 3, replace=False)]
            rng.shuffle(choices)
            questions.append({"id": f"{e.id}-{kind}", "video": e.id, "kind": kind, "question": text,
                              "choices": choices, "answer": answer, "answer_index": choices.index(answer),
                              "cue_colors": colors})
        video = read_video(find_video(root / "ds" / "videos", e.id))
        for cond in CONDITIONS:
            write_video(root / "videos" / cond / f"{e.id}.mp4", _cues(video.frames, tracks[e.id].tracks["0"], cond),
                        video.fps)
    write_jsonl(root / "questions" / "train.jsonl", questions)
    return root


def _cfg(**train) -> ExperimentConfig:
    base = dict(lr=3e-3, batch_size=4, grad_accum=1, max_steps=30, save_steps=10, log_steps=1, num_workers=0,
                conditions={"plain": 1.0, "box": 0.5, "trajectory": 0.5})
    base.update(train)
    return ExperimentConfig(
        frames_train=FramesConfig(fps=2, min_frames=4, max_frames=4, total_pixels=None,
                                  max_pixels_per_frame=64 * 64),
        model=ModelConfig(tiny=small_test_config()), train=TrainConfig(**base))


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_jsonl(out / "train_log.jsonl")]


def _choice_scores(model, processor, question, frames) -> list[float]:
    """Sum of log-probs of each choice's tokens (+ <|im_end|>), from a plain forward."""
    scores = []
    for choice in question["choices"]:
        inputs = build_inputs(processor, question, frames, answer=choice)
        start, labels = inputs.pop("answer_start"), inputs.pop("labels")[0]
        with torch.no_grad():
            logp = model(**inputs).logits[0].float().log_softmax(-1)
        scores.append(sum(logp[i - 1, labels[i]].item() for i in range(start, labels.shape[0])))
    return scores


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lora"
    summary = train(_cfg(), data / "questions" / "train.jsonl", data / "videos", out)
    return out, summary


def test_lora_answer_loss_falls_and_adapter_is_saved(trained):
    out, summary = trained
    losses = [l for _, l in _losses(out)]
    assert summary["steps"] == 30 and len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    final = out / "final"
    cfg = json.loads((final / "adapter_config.json").read_text())
    assert cfg["r"] == 64 and cfg["lora_alpha"] == 64 and cfg["peft_type"] == "LORA"
    assert sorted(cfg["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (final / "adapter_model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    from safetensors import safe_open

    with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".language_model.layers." in k for k in keys)  # LLM only, never the vision tower
    assert len(checkpoints(out)) == 2  # the last two are kept


def test_merged_and_adapter_give_the_same_choice_scores(trained, data, tmp_path):
    out, _ = trained
    base, adapter = out / "base", out / "final"
    merged = merge_adapter(base, adapter, tmp_path / "merged", dtype="float32")
    m_adapter, processor = load_model(base, dtype="float32", adapter=adapter)
    m_merged, _ = load_model(merged, dtype="float32")
    m_base, _ = load_model(base, dtype="float32")
    frames = FrameCache(data / "videos", _cfg().frames_train.spec())
    question = load_questions(data / "questions" / "train.jsonl")[0]
    fr = frames.get(question["video"], "plain")
    a = _choice_scores(m_adapter, processor, question, fr)
    m = _choice_scores(m_merged, processor, question, fr)
    b = _choice_scores(m_base, processor, question, fr)
    assert np.allclose(a, m, atol=1e-4, rtol=0), (a, m)
    assert not np.allclose(a, b, atol=1e-2)  # the adapter really changes the scores


def test_crash_and_resume_replays_the_same_loss_curve(trained, data, tmp_path):
    out, _ = trained
    crashed = tmp_path / "crashed"

    class Crash(RuntimeError):
        pass

    def crash_at_25(state):
        if state["step"] == 25:  # after the step-20 checkpoint, before the end
            raise Crash

    # encoder threads this time: the order of samples must not depend on them
    with pytest.raises(Crash):
        train(_cfg(num_workers=2), data / "questions" / "train.jsonl", data / "videos", crashed,
              on_step=crash_at_25)
    assert [int(p.name.split("-")[1]) for p in checkpoints(crashed)] == [10, 20]
    summary = train(_cfg(num_workers=2), data / "questions" / "train.jsonl", data / "videos", crashed,
                    resume=True)
    assert summary["steps"] == 30
    # float32 on CPU: the resumed curve equals the uninterrupted one exactly, steps 21-30 included
    assert _losses(crashed) == _losses(out)


def test_train_state_round_trips_through_the_checkpoint(trained, tmp_path):
    """state.json is the TrainState with the keys (in order) checkpoints had before the class: both ways."""
    out, summary = trained
    for ckpt in checkpoints(out):
        saved = json.loads((ckpt / "state.json").read_text())
        state = TrainState.load(ckpt / "state.json")
        assert state.to_dict() == saved and list(state.to_dict()) == list(saved)
        assert state.step == int(ckpt.name.split("-")[1]) and state.run_key == summary["run_key"]
    older = {"step": 20, "phase": 0, "phase_step": 20, "epoch": 1, "pos": 8, "elapsed": 12.5, "samples": 80,
             "phase_elapsed": 12.5, "run_key": "bb4048dda135e571"}  # a state.json as written before TrainState
    (tmp_path / "state.json").write_text(json.dumps(older))
    assert TrainState.load(tmp_path / "state.json") == TrainState(**older)
    del older["pos"]
    (tmp_path / "state.json").write_text(json.dumps(older))
    with pytest.raises(DataError, match="pos"):
        TrainState.load(tmp_path / "state.json")


def test_full_mode_with_curriculum_phases(data, tmp_path):
    cfg = _cfg(mode="full", lr=2e-3, vision_lr=1e-3, max_steps=8, save_steps=100,
               phases=[PhaseConfig(name="easy", kinds=["verb"], max_objects=3, fraction=0.5),
                       PhaseConfig(name="all", fraction=0.5)])
    summary = train(cfg, data / "questions" / "train.jsonl", data / "videos", tmp_path / "full")
    rows = list(read_jsonl(tmp_path / "full" / "train_log.jsonl"))
    assert [r["phase"] for r in rows] == ["easy"] * 4 + ["all"] * 4
    assert summary["steps"] == 8
    model, _ = load_model(tmp_path / "full" / "final")  # a whole model, reloadable
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"


def test_resumed_ranks_take_up_every_micro_batch_once(monkeypatch):
    """Under DDP (2 ranks, grad_accum 2) the checkpoint's data position, written by rank 0, must be where the
    whole step ended: after a resume neither rank repeats or skips a micro-batch."""
    import cuelab.model.data as d

    monkeypatch.setattr(d, "collate", lambda items, pad_id: items)
    samples, world, accum, B = list(range(48)), 2, 2, 2

    def take(start, rank, n):
        it = d.batches(samples, samples, start, B, lambda s: s, 0, rank, world)
        return [next(it) for _ in range(n)]

    steps = 3
    r0, r1 = take(0, 0, steps * accum), take(0, 1, steps * accum)
    pos = r0[-1][0]  # what save_checkpoint records (rank 0's state)
    resumed = take(pos, 0, 2) + take(pos, 1, 2)
    seen = [x for _, b in r0 + r1 + resumed for x in b]
    assert sorted(seen) == list(range(len(seen)))  # no micro-batch twice, none skipped
    assert [b for _, b in take(pos, 1, 2)] == [b for _, b in take(0, 1, steps * accum + 2)[-2:]]


def test_phase_selection_mixing_and_collator(data):
    qs = load_questions(data / "questions" / "train.jsonl")
    assert {q["kind"] for q in select(qs, kinds=["verb"])} == {"verb"}
    few = select(qs, max_objects=2)
    assert few and all(len(q["cue_colors"]) <= 2 for q in few) and len(few) < len(qs)
    samples = mix(qs, {"plain": 1.0, "trajectory": 0.5}, seed=0)
    assert sum(s.condition == "plain" for s in samples) == len(qs)
    assert sum(s.condition == "trajectory" for s in samples) == len(qs) // 2
    assert mix(qs, {"plain": 1.0, "trajectory": 0.5}, seed=0) == samples
    model_dir = None  # a processor is enough for the collator
    from cuelab.model.tiny import build_tiny

    processor = build_tiny(small_test_config())[1]
    enc = SampleEncoder(processor, FrameCache(data / "videos", _cfg().frames_train.spec()))
    items = [enc(s) for s in samples[:3]]
    batch = collate(items, processor.tokenizer.pad_token_id)
    n = max(it["input_ids"].shape[1] for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["mm_token_type_ids"].shape == (3, n)
    for row, it in enumerate(items):
        k = it["input_ids"].shape[1]
        # the training collator's prompt ids equal an eval-style call of the prompt builder (no answer)
        q = samples[row].question
        fr = enc.frames.get(q["video"], samples[row].condition)
        prompt = build_inputs(processor, q, fr)["input_ids"][0]
        assert torch.equal(batch["input_ids"][row, :prompt.shape[0]], prompt)
        assert (batch["labels"][row, :it["answer_start"]] == -100).all() and (batch["labels"][row, k:] == -100).all()
        assert (batch["attention_mask"][row, k:] == 0).all() and (batch["attention_mask"][row, :k] == 1).all()
    assert batch["video_grid_thw"].shape == (3, 3)
    assert batch["pixel_values_videos"].shape[0] == sum(int(g.prod()) for g in batch["video_grid_thw"])
    del model_dir


def test_bad_video_is_reported_and_skipped(data, tmp_path):
    qs = load_questions(data / "questions" / "train.jsonl")
    from cuelab.model.tiny import build_tiny
    from cuelab.model.data import Sample

    processor = build_tiny(small_test_config())[1]
    videos = tmp_path / "videos" / "plain"
    videos.mkdir(parents=True)
    (videos / f"{qs[0]['video']}.mp4").write_bytes(b"not a video")
    enc = SampleEncoder(processor, FrameCache(tmp_path / "videos", _cfg().frames_train.spec()),
                        errors_path=tmp_path / "errors.jsonl")
    assert enc(Sample(qs[0], "plain")) is None and enc(Sample(qs[0], "plain")) is None
    errors = list(read_jsonl(tmp_path / "errors.jsonl"))
    assert len(errors) == 1 and errors[0]["video_id"] == qs[0]["video"] and errors[0]["condition"] == "plain"
    with pytest.raises(DataError, match="lacks a field"):
        bad = tmp_path / "bad.jsonl"
        write_jsonl(bad, [{"id": "x", "video": "v"}])
        load_questions(bad)


def test_lora_targets_only_the_language_model():
    from cuelab.model.tiny import build_tiny

    model, _ = build_tiny(small_test_config())
    # vision blocks have their own "linear_fc1"; asking for it must not reach the vision tower
    targets = lora_targets(model, TrainConfig(target_modules=["q_proj", "linear_fc1", "gate_proj"]))
    assert isinstance(targets, str)
    import re

    matched = [n for n, _ in model.named_modules() if re.fullmatch(targets, n)]
    assert matched and all(n.startswith("model.language_model.layers.") for n in matched)
    assert lora_targets(model, TrainConfig()) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_time_budget_splits_phases(data, tmp_path, monkeypatch):
    """A 6 s budget shared half and half: with a clock that advances 0.5 s a step (the wall clock under load
    would make the step counts vary; benchmarks/wall_clock.py measures the real overrun), 6 steps of each phase
    in order, then the run stops at its budget."""
    import types

    import cuelab.model.train as train_mod

    ticks = iter(0.5 * i for i in range(1000))  # one reading at the start, one after each step
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    cfg = _cfg(max_steps=None, max_seconds=6.0, save_steps=1000,
               phases=[PhaseConfig(name="easy", kinds=["verb"], fraction=0.5), PhaseConfig(name="all", fraction=0.5)])
    summary = train(cfg, data / "questions" / "train.jsonl", data / "videos", tmp_path / "timed")
    rows = list(read_jsonl(tmp_path / "timed" / "train_log.jsonl"))
    assert [r["phase"] for r in rows] == ["easy"] * 6 + ["all"] * 6
    assert [r["seconds"] for r in rows] == [0.5 * (i + 1) for i in range(12)]
    assert summary["seconds"] == 6.0 and summary["steps"] == 12


def test_cli_tiny_model_train_merge(data, tmp_path):
    from typer.testing import CliRunner

    from cuelab.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["tiny-model", "--out", str(tmp_path / "tiny"), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("output_dir: " + str(tmp_path / "run") + "\n"
                   "frames_train: {fps: 2, min_frames: 4, max_frames: 4, total_pixels: null, "
                   "max_pixels_per_frame: 4096}\n"
                   "train: {batch_size: 2, grad_accum: 1, max_steps: 2, log_steps: 1}\n")
    res = runner.invoke(app, ["train", str(cfg), "--questions", str(data / "questions" / "train.jsonl"),
                              "--videos", str(data / "videos"), "--base-model", str(tmp_path / "tiny"),
                              "--set", "train.conditions={plain: 1.0}"])
    assert res.exit_code == 0, res.output
    adapter = tmp_path / "run" / "models" / "finetuned" / "final"
    assert (adapter / "adapter_config.json").is_file()
    log = tmp_path / "run" / "models" / "finetuned" / "train_log.jsonl"
    args = ["train", str(cfg), "--questions", str(data / "questions" / "train.jsonl"), "--videos",
            str(data / "videos"), "--base-model", str(tmp_path / "tiny"), "--set", "train.conditions={plain: 1.0}",
            "--resume"]
    before = log.read_bytes()
    assert runner.invoke(app, args).exit_code == 0 and log.read_bytes() == before  # finished: nothing redone
    res = runner.invoke(app, args + ["--set", "train.max_steps=3"])  # other settings: trained afresh
    assert res.exit_code == 0, res.output
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3]
    res = runner.invoke(app, ["merge", "--model", str(tmp_path / "tiny"), "--adapter", str(adapter),
                              "--out", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "merged" / "config.json").is_file()
    res = runner.invoke(app, ["train", str(cfg), "--questions", str(tmp_path / "missing.jsonl"),
                              "--videos", str(data / "videos"), "--base-model", str(tmp_path / "tiny")])
    assert res.exit_code == 2 and "missing.jsonl" in res.output


def test_accelerate_configs_parse():
    import yaml

    root = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    ddp = yaml.safe_load((root / "ddp.yaml").read_text())
    fsdp = yaml.safe_load((root / "fsdp.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU" and fsdp["distributed_type"] == "FSDP"
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    for cls in fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert hasattr(modeling_qwen3_vl, cls)  # the wrap units exist in the installed transformers
