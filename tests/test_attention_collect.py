"""The last-row recorder gives exactly eager attention's row, leaves the model's outputs and settings alone."""

import numpy as np
import pytest
import torch

from cuelab.attention.collect import attention_to_video, recording, text_model
from cuelab.attention.grid import video_token_positions
from cuelab.model.prompt import build_inputs
from cuelab.model.tiny import build_tiny, small_test_config
from cuelab.video.io import SampledFrames

QUESTION = {"id": "q", "video": "v", "question": "What is pushed?", "choices": ["a", "b", "c", "d"]}


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny(small_test_config(seed=1))
    rng = np.random.default_rng(0)
    frames = SampledFrames(frames=rng.integers(0, 255, (4, 64, 96, 3), dtype=np.uint8), indices=[0, 4, 8, 12],
                           source_fps=12.0, total_frames=13, width=96, height=64, resized_width=96, resized_height=64)
    return model, processor, build_inputs(processor, QUESTION, frames)


def _eager_last_row(model, inputs) -> np.ndarray:
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model(**inputs, output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation("sdpa")
    return torch.stack([a[0, :, -1, :] for a in out.attentions]).numpy()  # (layers, heads, L)


@pytest.mark.parametrize("per_head", [True, False])
def test_recorded_row_equals_eager_attention(tiny, per_head):
    model, processor, inputs = tiny
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    rows, mass, pos = attention_to_video(model, inputs, video_token, per_head=per_head)
    assert list(pos) == list(video_token_positions(inputs["input_ids"], video_token)) and len(pos) == 12
    eager = _eager_last_row(model, inputs)
    want = eager[:, :, pos] if per_head else eager[:, :, pos].mean(1)
    assert rows.shape == want.shape
    np.testing.assert_allclose(rows, want, atol=1e-6)
    np.testing.assert_allclose(mass, want.sum(-1), atol=1e-6)
    assert np.all(mass < 1) and np.all(mass > 0)  # the text tokens get the rest


def test_recording_keeps_outputs_and_restores_the_setting(tiny):
    model, processor, inputs = tiny
    lm = text_model(model)
    before = lm.config._attn_implementation
    with torch.inference_mode():
        ref = model(**inputs, use_cache=False).logits
        with recording(model, torch.tensor([0, 1])) as rec:
            got = model(**inputs, use_cache=False).logits
    assert len(rec.rows) == len(lm.layers) and all(r is not None for r in rec.rows)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert lm.config._attn_implementation == before
    assert not hasattr(lm.layers[0].self_attn, "_cuelab_recorder")


def test_recorder_finds_the_decoder_under_a_lora_adapter(tiny):
    from peft import LoraConfig, get_peft_model

    model, processor, inputs = tiny
    base = type(model)(model.config).eval()
    base.load_state_dict(model.state_dict())
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    rows, _, _ = attention_to_video(peft, inputs, video_token)
    plain_rows, _, _ = attention_to_video(model, inputs, video_token)
    assert rows.shape == plain_rows.shape and not np.allclose(rows, plain_rows)  # the adapter's q moved attention
