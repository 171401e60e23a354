"""THE prompt builder: layout with the real Qwen tokenizer, answer-only labels, blind prompts."""

import numpy as np
import pytest
import torch

from cuelab.errors import DataError
from cuelab.model.prompt import (IGNORE_INDEX, build_inputs, build_messages, choice_token_ids, prompt_text)
from cuelab.model.prompt import PromptSpec, prompt_spec
from cuelab.model.tiny import build_processor, build_tiny, qwen_tokenizer_from_files, small_test_config
from cuelab.video.io import FrameSpec, Video, sample_frames
from tests.conftest import fixture_path

QUESTION = {"id": "q1", "video": "v1", "kind": "verb", "question": "_____ the red cube from left to right.",
            "choices": ["Pushing", "Lifting up", "Dropping", "Covering"], "answer": "Pushing", "answer_index": 0,
            "hint": "The red box marks the cube."}


def _frames(n=24, h=64, w=96, fps=12.0, max_frames=8):
    rng = np.random.default_rng(0)
    video = Video(rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8), fps, "v1.mp4")
    return sample_frames(video, FrameSpec(fps=4.0, min_frames=4, max_frames=max_frames, total_pixels=None,
                                          max_pixels_per_frame=64 * 96), video_id="v1")


@pytest.fixture(scope="module")
def tiny_processor():
    return build_tiny(small_test_config())[1]


def test_real_qwen_tokenizer_prompt_layout():
    processor = build_processor(qwen_tokenizer_from_files(fixture_path("qwen-tokenizer")))
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|video_pad|>"]) == [
        151643, 151644, 151645, 151656]
    frames = _frames()  # 24 frames at 12 fps -> 8 frames (4 fps) at 64x96
    assert frames.frames.shape == (8, 64, 96, 3)
    out = build_inputs(processor, QUESTION, frames, answer="Pushing")
    ids = out["input_ids"][0].tolist()
    t, h, w = out["video_grid_thw"][0].tolist()
    assert (t, h, w) == (8 // 2, 64 // 16, 96 // 16)
    assert ids.count(151656) == (8 // 2) * (64 // 32) * (96 // 32)  # T/2 * H/32 * W/32 video tokens
    assert ids[0] == 151644  # <|im_start|>user
    assert ids.count(151652) == 1 + 4 and ids.count(151653) == 1 + 4  # outer pair + one pair per frame pair
    assert ids.count(151644) == 2 and ids.count(151645) == 2  # user and assistant turns, each closed
    assert ids[-1] == 151645 and out["labels"][0, -1].item() == 151645
    text = tok.decode(ids)
    # one timestamp per frame pair, the mean time of its two frames
    ts = [(frames.indices[i] + frames.indices[i + 1]) / 2 / 12.0 for i in range(0, 8, 2)]
    for t_sec in ts:
        assert f"<{t_sec:.1f} seconds><|vision_start|>" in text
    assert text.startswith("<|im_start|>user\n<|vision_start|><")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\nPushing<|im_end|>")
    # video tokens are marked 2 in mm_token_type_ids, everything else 0
    mm = out["mm_token_type_ids"][0]
    assert torch.equal(mm == 2, out["input_ids"][0] == 151656) and set(mm.tolist()) <= {0, 2}


def test_answer_only_labels_and_choice_ids(tiny_processor):
    out = build_inputs(tiny_processor, QUESTION, _frames(), answer="Lifting up")
    labels, ids, start = out["labels"][0], out["input_ids"][0], out["answer_start"]
    choices = choice_token_ids(tiny_processor, QUESTION)
    assert (labels[:start] == IGNORE_INDEX).all()
    assert labels[start:].tolist() == ids[start:].tolist() == choices[1] + [tiny_processor.tokenizer.eos_token_id]
    assert choice_token_ids(tiny_processor, QUESTION, with_end=True)[1] == labels[start:].tolist()
    # the prompt part equals the prompt built without an answer (what evaluation scores from)
    prompt = build_inputs(tiny_processor, QUESTION, _frames())
    assert torch.equal(prompt["input_ids"][0], ids[:start]) and "labels" not in prompt
    assert torch.equal(prompt["pixel_values_videos"], out["pixel_values_videos"])
    assert out["attention_mask"].shape == out["input_ids"].shape == out["mm_token_type_ids"].shape
    # tokenizing the answer alone gives the same ids as tokenizing prompt + answer as one text
    joint = tiny_processor.tokenizer(prompt_text(tiny_processor, QUESTION, False) + "Lifting up")["input_ids"]
    blind = build_inputs(tiny_processor, QUESTION, None)["input_ids"][0].tolist()
    assert joint == blind + choices[1]


def test_blind_hint_order_and_system(tiny_processor):
    blind = build_inputs(tiny_processor, QUESTION, None)
    assert "pixel_values_videos" not in blind
    vid = tiny_processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert vid not in blind["input_ids"][0].tolist()
    assert "The red box" in prompt_text(tiny_processor, QUESTION, True, hint=True)
    assert "The red box" not in prompt_text(tiny_processor, QUESTION, True)
    qfirst = prompt_text(tiny_processor, QUESTION, True, question_first=True)
    assert qfirst.index("Choices:") < qfirst.index("<|video_pad|>")
    assert prompt_text(tiny_processor, QUESTION, True).index("<|video_pad|>") < qfirst.index("Choices:")
    sys_text = prompt_text(tiny_processor, QUESTION, False, system_prompt="Be brief.")
    assert sys_text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    msgs = build_messages(QUESTION, with_video=True)
    assert [c["type"] for c in msgs[0]["content"]] == ["video", "text"]
    for choice in QUESTION["choices"]:
        assert f"- {choice}\n" in msgs[0]["content"][1]["text"]


def test_bad_question_record_names_the_field(tiny_processor):
    with pytest.raises(DataError, match="choices"):
        build_inputs(tiny_processor, {"video": "v9", "question": "x _____"}, None)


# --- the first study's prompt and training target (model.prompt: first_study) -----------------------------------

STUDY_Q = {"id": "57082-object-0", "video": "57082", "kind": "object", "question": "putting _____ into box",
           "choices": ["comb", "child's toy", "comb", "pen"], "answer": "comb", "answer_index": 0}
# what the study's annotate.py wrote as the human turn for this question (its f-string, evaluated by hand)
STUDY_HUMAN = ("<video>\nLook at the video, and then fill in the blank accordingly from one of the given choices "
               "Only output the correct answer. \nputting _____ into box. \nChoices: ['comb', \"child's toy\", "
               "'comb', 'pen']")


def _study_user_content(value: str) -> list[dict]:
    """The study's trainer (qwenvl/data/data_processor.py) turned the human value into content items this way:
    split at <video>, the video item in its place, each other non-blank piece stripped."""
    import re

    out = []
    for seg in re.split(r"(<video>)", value):
        if seg == "<video>":
            out.append({"type": "video"})
        elif seg.strip():
            out.append({"type": "text", "text": seg.strip()})
    return out


def test_first_study_prompt_is_the_studys_text():
    spec = PromptSpec(style="first_study")
    msgs = build_messages(STUDY_Q, with_video=True, spec=spec)
    # one user message, video first, no system message: what measure.py sent and the trainer built
    assert msgs == [{"role": "user", "content": _study_user_content(STUDY_HUMAN)}]
    assert msgs[0]["content"][1]["text"] == (
        "Look at the video, and then fill in the blank accordingly from one of the given choices Only output the "
        "correct answer. \nputting _____ into box. \nChoices: ['comb', \"child's toy\", 'comb', 'pen']")
    # the cuelab style is another text (and stays the default)
    assert build_messages(STUDY_Q, with_video=True)[0]["content"][1]["text"].startswith("putting _____ into box\n")
    with pytest.raises(TypeError, match="not both"):
        build_messages(STUDY_Q, True, hint=True, spec=spec)


def test_first_study_labels_cover_answer_end_token_and_newline():
    """Under first_study the labels are the tokens the study's trainer labelled: from two tokens after
    `assistant` up to one past <|im_end|> of the full conversation, i.e. answer + <|im_end|> + newline."""
    processor = build_processor(qwen_tokenizer_from_files(fixture_path("qwen-tokenizer")))
    spec = PromptSpec(style="first_study")
    out = build_inputs(processor, STUDY_Q, None, answer="child's toy", spec=spec)
    ids, labels = out["input_ids"][0].tolist(), out["labels"][0].tolist()
    answer_ids = processor.tokenizer("child's toy", add_special_tokens=False)["input_ids"]
    assert ids[out["answer_start"]:] == answer_ids + [151645, 198]  # ... <|im_end|> "\n"
    # the study's rule on the whole conversation through the chat template gives the same ids and labels
    conv = build_messages(STUDY_Q, False, spec=spec) + [{"role": "assistant", "content": "child's toy"}]
    full = processor.tokenizer(processor.apply_chat_template(conv, tokenize=False))["input_ids"]
    study = [IGNORE_INDEX] * len(full)
    start = full.index(77091) + 2  # "assistant", "\n"
    end = full.index(151645, start)
    study[start:end + 2] = full[start:end + 2]
    assert full == ids and study == labels
    # the cuelab style's target is unchanged: answer + <|im_end|>
    cue = build_inputs(processor, STUDY_Q, None, answer="child's toy")
    assert cue["input_ids"][0, cue["answer_start"]:].tolist() == answer_ids + [151645]
    # scoring reads choice + <|im_end|> in both styles
    assert choice_token_ids(processor, STUDY_Q, with_end=True)[1] == answer_ids + [151645]


def test_prompt_spec_from_config():
    from cuelab.config import ExperimentConfig

    cfg = ExperimentConfig.model_validate({"protocol": "first-study", "model": {"system_prompt": "Be brief."}})
    assert prompt_spec(cfg) == PromptSpec("first_study", False, False, "Be brief.")
    assert prompt_spec(ExperimentConfig(), hint=True) == PromptSpec("cuelab", True, False, None)
