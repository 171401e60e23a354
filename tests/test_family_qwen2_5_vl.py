"""Qwen2.5-VL (family `qwen2_5_vl`): the real checkpoints' prompt layout (default system turn), fast scores equal
one full forward per choice in every prompt layout and with several videos at once, rope time positions from the
processor's second_per_grid_ts, window attention in the vision tower, LoRA training and reload, the tiny folder
through the Auto classes, attention to the video tokens and the real architecture sizes."""

import numpy as np
import pytest
import torch

from cuelab.evaluate.hf import HFScorer, VisionCache, reference_scores
from cuelab.model.families import family_of, get_family
from cuelab.model.families.qwen2_5_vl import preset_config
from cuelab.model.prompt import PromptSpec, build_inputs, prompt_text
from cuelab.model.tiny import small_test_config
from cuelab.video.io import FrameSpec, Video, sample_frames

FAM = get_family("qwen2_5_vl")
QUESTIONS = [
    {"id": "q1", "video": "v1", "kind": "verb", "question": "_____ the red cube from left to right.",
     "choices": ["Pushing", "Lifting up", "Lifting", "Covering the blue ball"], "answer": "Pushing",
     "answer_index": 0, "hint": "The red box marks the cube."},
    {"id": "q2", "video": "v1", "kind": "object", "question": "What is the object in the red box?",
     "choices": ["red cube", "blue ball", "green cone", "yellow star"], "answer": "red cube", "answer_index": 0,
     "hint": "The red box marks the answer."},
]


@pytest.fixture(scope="module")
def tiny():
    model, processor = FAM.build_tiny(small_test_config())
    return model, processor


def _frames(processor, seed=0, h=64, w=96, fps=4.0):
    g = FAM.geometry(processor)
    rng = np.random.default_rng(seed)
    video = Video(rng.integers(0, 255, (24, h, w, 3), dtype=np.uint8), 12.0, "v.mp4")
    spec = FrameSpec(fps=fps, min_frames=4, max_frames=8, total_pixels=None, max_pixels_per_frame=h * w,
                     factor=g.factor, temporal_patch=g.temporal_patch)
    return sample_frames(video, spec, video_id=f"v{seed}")


def _max_diff(fast, ref) -> float:
    return float(np.max(np.abs(np.array(fast.scores) - np.array(ref.scores))))


def test_prompt_has_the_real_checkpoints_layout(tiny):
    _, processor = tiny
    assert prompt_text(processor, QUESTIONS[1], True).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>What is the object in the red box?\nChoices:\n")
    assert prompt_text(processor, QUESTIONS[1], True).endswith("<|im_end|>\n<|im_start|>assistant\n")
    own = prompt_text(processor, QUESTIONS[1], False, spec=PromptSpec(system_prompt="Be brief."))
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is")  # no default turn
    assert FAM.geometry(processor).factor == 28 and FAM.geometry(processor).temporal_patch == 2


@pytest.mark.parametrize("spec,blind,pack", [
    (PromptSpec(hint=True), False, False), (PromptSpec(question_first=True), False, False),
    (PromptSpec(), True, False), (PromptSpec(), False, True), (PromptSpec(question_first=True), False, True),
    (PromptSpec(style="first_study"), False, False)])
def test_fast_scores_equal_one_forward_per_choice(tiny, spec, blind, pack):
    model, processor = tiny
    frames = None if blind else _frames(processor)
    scorer = HFScorer(model, processor, spec=spec, pack_choices=pack)
    results = scorer.score(scorer.prepare(QUESTIONS, frames, hint=spec.hint))
    for q, fast in zip(QUESTIONS, results):
        assert _max_diff(fast, reference_scores(model, processor, q, frames, spec=spec)) <= 1e-4
    assert results[0].scores != results[1].scores  # not vacuous


def test_several_videos_at_once_score_as_the_reference(tiny):
    """score_many: videos of two sizes, a blind one, one vision call; each row reads its own video's prefix."""
    model, processor = tiny
    videos = [(_frames(processor, 0), QUESTIONS), (_frames(processor, 2), QUESTIONS[:1]), (None, QUESTIONS),
              (_frames(processor, 3, h=32), QUESTIONS[1:])]
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=8))
    many = scorer.score_many([scorer.prepare(qs, fr) for fr, qs in videos], [("a",), ("b",), None, ("d",)])
    for (fr, qs), results in zip(videos, many):
        for q, fast in zip(qs, results):
            assert _max_diff(fast, reference_scores(model, processor, q, fr)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(many[0][0].scores, many[1][0].scores)) > 1e-3


@pytest.mark.parametrize("fps", [2.0, 4.0])
def test_rope_time_axis_follows_second_per_grid_ts(tiny, fps):
    """Temporal patch k sits at k * tokens_per_second * second_per_grid_ts (2 frames at `fps`): the scorer's
    positions use the processor's value, so scores still equal the model's own forward."""
    model, processor = tiny
    frames = _frames(processor, fps=fps)
    inputs = build_inputs(processor, QUESTIONS[0], frames)
    assert float(inputs["second_per_grid_ts"][0]) == pytest.approx(2 / fps)
    pixels = FAM.video_pixels(inputs, torch.float32)
    pos, _ = FAM.positions(model, inputs["input_ids"][0], inputs["mm_token_type_ids"][0], pixels)
    vis = inputs["input_ids"][0] == FAM.video_token_id(model)
    t = pos[0, vis].unique(sorted=True)
    step = model.config.vision_config.tokens_per_second * 2 / fps
    assert torch.equal(t - t[0], (torch.arange(len(t)) * step).long())
    scorer = HFScorer(model, processor)
    fast = scorer.score(scorer.prepare(QUESTIONS[:1], frames))[0]
    assert _max_diff(fast, reference_scores(model, processor, QUESTIONS[0], frames)) <= 1e-4


def test_window_attention_tower_keeps_the_token_order():
    """Two vision blocks (the first attends within 112 px windows, which permutes the patches) on frames four
    windows wide: the features the family scatters still give the model's own scores."""
    cfg = small_test_config().model_copy(update={"vision_depth": 2})
    model, processor = FAM.build_tiny(cfg)
    assert model.config.vision_config.fullatt_block_indexes == [1]
    frames = _frames(processor, 5, h=112, w=448)
    scorer = HFScorer(model, processor)
    fast = scorer.score(scorer.prepare(QUESTIONS, frames))
    for q, f in zip(QUESTIONS, fast):
        assert _max_diff(f, reference_scores(model, processor, q, frames)) <= 1e-4


def test_lora_trains_and_the_adapter_reloads(tiny, tmp_path):
    from cuelab.config import TrainConfig
    from cuelab.model.load import load_model
    from cuelab.model.train import prepare_model

    _, processor = tiny
    base, _ = FAM.build_tiny(small_test_config())
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    frames = _frames(processor)
    model, groups = prepare_model(base.train(), TrainConfig(rank=8, alpha=16, dropout=0.0), "cpu")
    opt = torch.optim.AdamW(groups, lr=1e-2)
    batch = {k: v for k, v in build_inputs(processor, QUESTIONS[1], frames, answer="red cube").items()
             if k != "answer_start"}
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    model.eval().save_pretrained(tmp_path / "adapter")
    reloaded, proc2 = load_model(tmp_path / "base", dtype="float32", adapter=tmp_path / "adapter")
    q = QUESTIONS[1]
    with torch.no_grad():
        want = reference_scores(model, processor, q, frames)
    got = HFScorer(reloaded, proc2)
    got = got.score(got.prepare([q], frames))[0]
    assert _max_diff(got, want) <= 1e-4


def test_tiny_folder_reloads_through_the_auto_classes(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cuelab.model.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny", small_test_config(), family="qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    for obj in (model, model.config.to_dict(), processor):
        assert family_of(obj) is FAM
    # a bare tokenizer only tells its end-of-turn token, which every Qwen-tokenizer family shares
    assert family_of(processor.tokenizer).end_token == FAM.end_token
    assert processor.video_processor.patch_size == 14 and processor.tokenizer.eos_token == "<|im_end|>"
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}]
    assert processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n")
    a, _ = FAM.build_tiny(small_test_config())
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), model.state_dict().values()))


def test_attention_to_video_covers_the_grid(tiny):
    from cuelab.attention.collect import attention_to_video

    model, processor = tiny
    frames = _frames(processor)
    inputs = build_inputs(processor, QUESTIONS[0], frames)
    rows, mass, pos = attention_to_video(model, inputs, FAM.video_token_id(model))
    grid = FAM.video_grid(inputs, processor)
    assert len(FAM.grid_positions(inputs["input_ids"], model)) == grid.n_tokens == rows.shape[-1] == len(pos)
    assert grid.cell_px * grid.w == frames.resized_width and grid.cell_px * grid.h == frames.resized_height
    assert np.all(mass > 0) and np.all(mass < 1)


@pytest.mark.parametrize("name,hidden,layers,kv,vocab,tied", [
    ("qwen2.5-vl-3b", 2048, 36, 2, 151936, True), ("qwen2.5-vl-7b", 3584, 28, 4, 152064, False)])
def test_presets_have_the_real_architecture(name, hidden, layers, kv, vocab, tied):
    cfg = preset_config(name)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_key_value_heads, t.vocab_size) == (hidden, layers, kv, vocab)
    assert t.rope_parameters["mrope_section"] == [16, 24, 24] and cfg.tie_word_embeddings == tied
    assert (v.depth, v.hidden_size, v.out_hidden_size, v.tokens_per_second) == (32, 1280, hidden, 2)
    assert list(v.fullatt_block_indexes) == [7, 15, 23, 31] and cfg.video_token_id == 151656
