"""InternVL3 (family `internvl`): the real checkpoints' prompt layout ("Frame{i}: <img><IMG_CONTEXT>*n</img>" per
frame, the image context token standing for video tokens), fast scores equal one full forward per choice in every
prompt layout and with several videos at once, the frame size guard, the per-frame token order, LoRA training and
reload, the tiny folder through the Auto classes, attention to the video tokens and the real architecture sizes."""

import numpy as np
import pytest
import torch

from cuelab.errors import DataError
from cuelab.evaluate.hf import HFScorer, VisionCache, reference_scores
from cuelab.model.families import family_of, get_family
from cuelab.model.families.internvl import preset_config
from cuelab.model.prompt import PromptSpec, build_inputs, prompt_text
from cuelab.model.tiny import small_test_config
from cuelab.video.io import FrameSpec, Video, sample_frames

FAM = get_family("internvl")
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


def _frames(processor, seed=0, h=64, w=96, n=8, size=True):
    """Frames sampled with the family's FrameSpec (its fixed size unless `size` is False)."""
    g = FAM.geometry(processor)
    rng = np.random.default_rng(seed)
    video = Video(rng.integers(0, 255, (24, h, w, 3), dtype=np.uint8), 12.0, "v.mp4")
    spec = FrameSpec(fps=4.0, min_frames=2, max_frames=n, total_pixels=None, max_pixels_per_frame=h * w,
                     factor=g.factor, temporal_patch=g.temporal_patch, size=g.size if size else None)
    return sample_frames(video, spec, video_id=f"v{seed}")


def _max_diff(fast, ref) -> float:
    return float(np.max(np.abs(np.array(fast.scores) - np.array(ref.scores))))


def test_prompt_has_the_real_checkpoints_layout(tiny):
    model, processor = tiny
    assert prompt_text(processor, QUESTIONS[1], True) == (
        "<|im_start|>user\n<video>\nWhat is the object in the red box?\nChoices:\n- red cube\n- blue ball\n"
        "- green cone\n- yellow star\nAnswer with one of the choices.<|im_end|>\n<|im_start|>assistant\n")
    frames = _frames(processor, n=2)
    inputs = build_inputs(processor, QUESTIONS[1], frames)
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    per_frame = "<img>" + "<IMG_CONTEXT>" * 16 + "</img>"
    assert text.startswith(f"<|im_start|>user\nFrame1: {per_frame}\nFrame2: {per_frame}\nWhat is the object")
    assert FAM.video_token == "<IMG_CONTEXT>" == processor.tokenizer.convert_ids_to_tokens(FAM.video_token_id(model))
    g = FAM.geometry(processor)
    assert (g.patch, g.merge, g.temporal_patch, g.size) == (14, 2, 1, (112, 112))
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}


def test_frames_of_another_size_are_refused(tiny):
    """The tower reshapes each frame's patches into a square: frames not at the processor's size are an error
    naming the video, never silently resized or misplaced."""
    _, processor = tiny
    with pytest.raises(DataError, match="the model sees 112x112") as e:
        build_inputs(processor, QUESTIONS[0], _frames(processor, size=False))
    assert e.value.video_id == "v0" and e.value.field == "frames.size"


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


def test_several_videos_at_once_score_as_the_reference(tiny):
    """score_many: videos of different frame counts, a blind one, one vision call; each row reads its own video's
    prefix."""
    model, processor = tiny
    videos = [(_frames(processor, 0), QUESTIONS), (_frames(processor, 2), QUESTIONS[:1]), (None, QUESTIONS),
              (_frames(processor, 3, n=4), QUESTIONS[1:])]
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=8))
    many = scorer.score_many([scorer.prepare(qs, fr) for fr, qs in videos], [("a",), ("b",), None, ("d",)])
    for (fr, qs), results in zip(videos, many):
        for q, fast in zip(qs, results):
            assert _max_diff(fast, reference_scores(model, processor, q, fr)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(many[0][0].scores, many[1][0].scores)) > 1e-3


def test_video_features_follow_the_grid_order(tiny):
    """Token k of the video is the projection of grid cell k's 2 x 2 patches (frame-major, then row, then column;
    the pixel shuffle's channel order): the order the model scatters them and the grid the attention maps read."""
    model, processor = tiny
    frames = _frames(processor, n=2)
    inputs = build_inputs(processor, QUESTIONS[0], frames)
    grid = FAM.video_grid(inputs, processor)
    pixels = FAM.video_pixels(inputs, torch.float32)
    inner = model.model
    with torch.no_grad():
        got = FAM.video_features(model, [pixels], "cpu")[0]
        patches = inner.vision_tower(pixel_values=pixels["pixel_values"]).last_hidden_state[:, 1:]  # no CLS
        side = grid.h * grid.merge
        x = patches.reshape(grid.t, side, side, -1)
        cells = [grid.cell(k) for k in range(grid.n_tokens)]
        cat = torch.stack([torch.cat([x[t, 2 * i, 2 * j], x[t, 2 * i, 2 * j + 1], x[t, 2 * i + 1, 2 * j],
                                      x[t, 2 * i + 1, 2 * j + 1]]) for t, i, j in cells])
        want = inner.multi_modal_projector(cat)
    assert got.embeds.shape == want.shape == (2 * 16, model.config.text_config.hidden_size)
    assert torch.allclose(got.embeds, want, atol=1e-5) and got.extras == []


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
    assert all("vision" not in n for n, p in model.named_parameters() if p.requires_grad)
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
    scorer = HFScorer(reloaded, proc2)
    got = scorer.score(scorer.prepare([q], frames))[0]
    assert _max_diff(got, want) <= 1e-4


def test_tiny_folder_reloads_through_the_auto_classes(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cuelab.model.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny", small_test_config(), family="internvl")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    assert type(processor).__name__ == "InternVLProcessor"
    assert type(processor.video_processor).__name__ == "InternVLVideoProcessor"
    for obj in (model, model.config.to_dict(), processor):
        assert family_of(obj) is FAM
    tok = processor.tokenizer
    assert (tok.context_image_token, tok.start_image_token, tok.video_token) == ("<IMG_CONTEXT>", "<img>", "<video>")
    assert processor.image_seq_length == 16 and FAM.geometry(processor).size == (112, 112)
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}]
    assert processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<video>\nhi<|im_end|>\n<|im_start|>assistant\n")
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
    assert grid.n_tokens == 8 * 16
    assert grid.cell_px * grid.w == frames.resized_width and grid.cell_px * grid.h == frames.resized_height
    assert np.all(mass > 0) and np.all(mass < 1)


@pytest.mark.parametrize("name,hidden,layers,heads,kv,tied", [
    ("internvl3-1b", 896, 24, 14, 2, True), ("internvl3-2b", 1536, 28, 12, 2, True),
    ("internvl3-8b", 3584, 28, 28, 4, False)])
def test_presets_have_the_real_architecture(name, hidden, layers, heads, kv, tied):
    cfg = preset_config(name)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (
        hidden, layers, heads, kv)
    assert t.model_type == "qwen2" and t.vocab_size == 151674 and cfg.tie_word_embeddings == tied
    assert (v.hidden_size, v.num_hidden_layers, tuple(v.image_size), tuple(v.patch_size)) == (
        1024, 24, (448, 448), (14, 14))
    assert cfg.image_token_id == 151667 and cfg.image_seq_length == (448 // 14 // 2) ** 2 == 256
