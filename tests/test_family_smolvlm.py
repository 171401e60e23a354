"""SmolVLM2 (family `smolvlm`): the processor's video layout (intro line, one "Frame from mm:ss:" block per frame,
no sub-images), answers written after "Assistant:" with a space, fast scores equal one full forward per choice
in every prompt layout and with several videos at once, the features in the order the model scatters them, the
grid, LoRA training and reload, the tiny folder through the Auto classes, attention to the video tokens and the
real architecture sizes."""

import numpy as np
import pytest
import torch

from cuelab.evaluate.hf import HFScorer, VisionCache, reference_scores
from cuelab.model.families import family_of, get_family
from cuelab.model.families.smolvlm import preset_config
from cuelab.model.prompt import PromptSpec, answer_token_ids, build_inputs, prompt_text
from cuelab.model.tiny import small_test_config
from cuelab.video.io import FrameSpec, Video, sample_frames

FAM = get_family("smolvlm")
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
    return FAM.build_tiny(small_test_config())


def _frames(processor, seed=0, h=64, w=96, max_frames=8):
    """Frames at the family's fixed size (the geometry's `size`), as the runners sample them."""
    g = FAM.geometry(processor)
    rng = np.random.default_rng(seed)
    video = Video(rng.integers(0, 255, (24, h, w, 3), dtype=np.uint8), 12.0, "v.mp4")
    spec = FrameSpec(fps=4.0, min_frames=2, max_frames=max_frames, total_pixels=None, max_pixels_per_frame=h * w,
                     factor=g.factor, temporal_patch=g.temporal_patch, size=g.size)
    return sample_frames(video, spec, video_id=f"v{seed}")


def _max_diff(fast, ref) -> float:
    return float(np.max(np.abs(np.array(fast.scores) - np.array(ref.scores))))


def test_prompt_has_the_processors_video_layout(tiny):
    model, processor = tiny
    frames = _frames(processor)
    inputs = build_inputs(processor, QUESTIONS[1], frames)
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    frame = "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"
    stamps = [f"00:{int(t):02d}" for t in frames.timestamps]
    want = ("<|im_start|>User: You are provided the following series of eight frames from a 0:00:02 [H:MM:SS] "
            "video.\n" + "".join(f"\nFrame from {s}:{frame}" for s in stamps) + "\n\nWhat is the object in the "
            "red box?\nChoices:\n- red cube\n- blue ball\n- green cone\n- yellow star\nAnswer with one of the "
            "choices.<end_of_utterance>\nAssistant:")
    assert text == want  # whole frames only: no <row_i_col_j> sub-images
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"}
    assert tuple(inputs["pixel_values"].shape) == (1, frames.n, 3, 64, 64)
    assert prompt_text(processor, QUESTIONS[1], False).startswith("<|im_start|>User: What is the object")
    g = FAM.geometry(processor)
    assert (g.patch, g.merge, g.temporal_patch, g.size) == (32, 1, 1, (64, 64))


def test_answer_tokens_are_the_ones_the_template_writes(tiny):
    """The chat template writes an assistant answer as "Assistant: <answer>": the scored tokens are those."""
    _, processor = tiny
    tok = processor.tokenizer
    for answer in ("red cube", "Lifting up", "3 balls"):
        turn = [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        full = processor.apply_chat_template(turn, tokenize=False)
        assert full.endswith(f"Assistant: {answer}<end_of_utterance>\n")
        ids = tok(full, add_special_tokens=False)["input_ids"]
        want = answer_token_ids(processor, answer)
        assert ids[-1 - len(want):-1] == want and tok.decode(want[:-1]) == " " + answer


def test_frames_of_another_size_are_refused(tiny):
    _, processor = tiny
    rng = np.random.default_rng(0)
    video = Video(rng.integers(0, 255, (12, 64, 96, 3), dtype=np.uint8), 12.0, "v.mp4")
    frames = sample_frames(video, FrameSpec(min_frames=2, max_frames=4, total_pixels=None, temporal_patch=1),
                           video_id="odd")
    with pytest.raises(ValueError, match="odd"):
        build_inputs(processor, QUESTIONS[0], frames)


def test_video_features_are_the_models_own_in_scatter_order(tiny):
    """Two videos through one tower call give, per video, what get_image_features of that video alone gives."""
    model, processor = tiny
    pix = [FAM.video_pixels(build_inputs(processor, QUESTIONS[0], _frames(processor, s, max_frames=n)),
                            torch.float32) for s, n in ((0, 8), (1, 4))]
    feats = FAM.video_features(model, pix, "cpu")
    with torch.no_grad():
        for p, f in zip(pix, feats):
            want = model.model.get_image_features(p["pixel_values"], p["pixel_attention_mask"],
                                                  return_dict=True).pooler_output[0]
            assert f.extras == [] and f.embeds.shape == want.shape == (p["pixel_values"].shape[1] * 4, 64)
            assert torch.allclose(f.embeds, want, atol=1e-5)


@pytest.mark.parametrize("spec,blind,pack", [
    (PromptSpec(hint=True), False, False), (PromptSpec(question_first=True), False, False),
    (PromptSpec(), True, False), (PromptSpec(), False, True), (PromptSpec(question_first=True), False, True),
    (PromptSpec(style="first_study"), False, False), (PromptSpec(system_prompt="Be brief."), False, False)])
def test_fast_scores_equal_one_forward_per_choice(tiny, spec, blind, pack):
    model, processor = tiny
    frames = None if blind else _frames(processor)
    scorer = HFScorer(model, processor, spec=spec, pack_choices=pack)
    results = scorer.score(scorer.prepare(QUESTIONS, frames, hint=spec.hint))
    for q, fast in zip(QUESTIONS, results):
        assert _max_diff(fast, reference_scores(model, processor, q, frames, spec=spec)) <= 1e-4
    assert results[0].scores != results[1].scores  # not vacuous


def test_greedy_answers_are_choices_written_as_the_template_writes_them(tiny):
    model, processor = tiny
    scorer = HFScorer(model, processor)
    results = scorer.score(scorer.prepare(QUESTIONS, _frames(processor)), greedy=True)
    for q, r in zip(QUESTIONS, results):
        assert r.greedy_index is not None and r.greedy_tokens[-1] == scorer.end_id
        assert processor.tokenizer.decode(r.greedy_tokens[:-1]) == " " + q["choices"][r.greedy_index]


def test_several_videos_at_once_score_as_the_reference(tiny):
    """score_many: videos of different frame counts, a blind one, one vision call; each row reads its own
    video's prefix."""
    model, processor = tiny
    videos = [(_frames(processor, 0), QUESTIONS), (_frames(processor, 2), QUESTIONS[:1]), (None, QUESTIONS),
              (_frames(processor, 3, max_frames=4), QUESTIONS[1:])]
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=8))
    many = scorer.score_many([scorer.prepare(qs, fr) for fr, qs in videos], [("a",), ("b",), None, ("d",)])
    for (fr, qs), results in zip(videos, many):
        for q, fast in zip(qs, results):
            assert _max_diff(fast, reference_scores(model, processor, q, fr)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(many[0][0].scores, many[1][0].scores)) > 1e-3


def test_grid_maps_cells_to_pixels(tiny):
    model, processor = tiny
    frames = _frames(processor)
    inputs = build_inputs(processor, QUESTIONS[0], frames)
    grid = FAM.video_grid(inputs, processor)
    pos = FAM.grid_positions(inputs["input_ids"], model)
    assert (grid.t, grid.h, grid.w) == (frames.n, 2, 2) and grid.n_tokens == len(pos)
    assert grid.cell_px * grid.w == frames.resized_width and grid.cell_px * grid.h == frames.resized_height
    assert grid.frames_of(5) == [5]  # one frame per temporal cell


def test_family_is_found_from_model_config_processor_and_tokenizer(tiny):
    model, processor = tiny
    assert family_of(model) is FAM and family_of(model.config.to_dict()) is FAM and family_of(processor) is FAM
    assert family_of("smolvlm") is FAM


# SmolVLM2's vocabulary also holds `<|im_end|>` (SmolLM2's): a tokenizer's family needs its video token too
def test_family_is_found_from_the_bare_tokenizer(tiny):
    assert family_of(tiny[1].tokenizer) is FAM


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
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("text_model.layers" in n and "lora_" in n for n in trainable)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    batch = {k: v for k, v in build_inputs(processor, QUESTIONS[1], frames, answer="red cube").items()
             if k != "answer_start"}
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    model.eval().save_pretrained(tmp_path / "adapter")
    reloaded, proc2 = load_model(tmp_path / "base", dtype="float32", adapter=tmp_path / "adapter")
    q = QUESTIONS[1]
    with torch.no_grad():
        want = reference_scores(model, processor, q, frames)
    got = HFScorer(reloaded, proc2)
    got = got.score(got.prepare([q], frames))[0]
    assert _max_diff(got, want) <= 1e-4


def test_tiny_folder_reloads_through_the_auto_classes(tiny, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = AutoModelForImageTextToText.from_pretrained(tmp_path, dtype=torch.float32).eval()
    proc2 = AutoProcessor.from_pretrained(tmp_path)
    assert type(model2).__name__ == "SmolVLMForConditionalGeneration"
    assert type(proc2.video_processor).__name__ == "SmolVLMVideoProcessor"
    assert family_of(model2) is FAM and family_of(proc2) is FAM
    assert FAM.geometry(proc2) == FAM.geometry(processor)
    frames = _frames(processor)
    assert prompt_text(proc2, QUESTIONS[0], True) == prompt_text(processor, QUESTIONS[0], True)
    a = build_inputs(processor, QUESTIONS[0], frames)
    b = build_inputs(proc2, QUESTIONS[0], frames)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    s1, s2 = HFScorer(model, processor), HFScorer(model2, proc2)
    r1 = s1.score(s1.prepare(QUESTIONS, frames))
    r2 = s2.score(s2.prepare(QUESTIONS, frames))
    for x, y in zip(r1, r2):
        assert _max_diff(x, y) <= 1e-5


def test_build_tiny_is_deterministic_and_takes_the_demo_size():
    from cuelab.config import TinyModelConfig

    a, _ = FAM.build_tiny(small_test_config(seed=3))
    b, _ = FAM.build_tiny(small_test_config(seed=3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    demo, proc = FAM.build_tiny(TinyModelConfig())
    cfg = demo.config
    assert (cfg.text_config.hidden_size, cfg.vision_config.hidden_size, cfg.vision_config.image_size) == (128, 64, 64)
    assert len(proc.tokenizer) <= cfg.text_config.vocab_size


def test_attention_to_the_video_tokens(tiny):
    from cuelab.attention.collect import attention_to_video

    model, processor = tiny
    inputs = build_inputs(processor, QUESTIONS[0], _frames(processor))
    grid = FAM.video_grid(inputs, processor)
    assert len(FAM.grid_positions(inputs["input_ids"], model)) == grid.n_tokens
    rows, mass, positions = attention_to_video(model, inputs, FAM.video_token_id(model))
    assert rows.shape == (model.config.text_config.num_hidden_layers, grid.n_tokens)
    assert np.array_equal(np.asarray(positions).reshape(-1), FAM.grid_positions(inputs["input_ids"], model))
    assert np.all(mass > 0) and np.all(mass <= 1 + 1e-6)


@pytest.mark.parametrize("name,layers,hidden,side,patch,scale,tokens", [
    ("smolvlm2-2.2b", 24, 2048, 384, 14, 3, 81), ("smolvlm2-500m", 32, 960, 512, 16, 4, 64)])
def test_real_sizes(name, layers, hidden, side, patch, scale, tokens):
    cfg = preset_config(name)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.num_hidden_layers, t.hidden_size, t.vocab_size) == (layers, hidden, 49280)
    assert (v.image_size, v.patch_size, cfg.scale_factor, cfg.image_token_id) == (side, patch, scale, 49190)
    assert (side // patch) ** 2 // scale ** 2 == tokens
    model = FAM.random_model(name, device="meta")  # shapes only: no memory
    assert type(model).__name__ == "SmolVLMForConditionalGeneration"
    assert model.model.image_seq_len == tokens
