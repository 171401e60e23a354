"""InternVL3 (family `internvl`), what fits no table of tests/test_families.py: the real checkpoints' per-frame
layout ("Frame{i}: <img><IMG_CONTEXT>*n</img>", the image context token standing for video tokens) and the
per-frame token order of the pixel shuffle."""

import torch

from cuelab.model.prompt import build_inputs
from tests.family_fixtures import QUESTIONS, sample, tiny


def test_frames_are_numbered_image_blocks():
    t = tiny("internvl")
    inputs = build_inputs(t.processor, QUESTIONS[1], sample(t.fam, t.processor, n=2))
    text = t.processor.tokenizer.decode(inputs["input_ids"][0])
    per_frame = "<img>" + "<IMG_CONTEXT>" * 16 + "</img>"
    assert text.startswith(f"<|im_start|>user\nFrame1: {per_frame}\nFrame2: {per_frame}\nWhat is the object")


def test_video_features_follow_the_grid_order():
    """Token k of the video is the projection of grid cell k's 2 x 2 patches (frame-major, then row, then column;
    the pixel shuffle's channel order): the order the model scatters them and the grid the attention maps read."""
    t = tiny("internvl")
    fam, model = t.fam, t.model
    inputs = build_inputs(t.processor, QUESTIONS[0], sample(fam, t.processor, n=2))
    grid = fam.video_grid(inputs, t.processor)
    pixels = fam.video_pixels(inputs, torch.float32)
    inner = model.model
    with torch.no_grad():
        got = fam.video_features(model, [pixels], "cpu")[0]
        patches = inner.vision_tower(pixel_values=pixels["pixel_values"]).last_hidden_state[:, 1:]  # no CLS
        side = grid.h * grid.merge
        x = patches.reshape(grid.t, side, side, -1)
        cells = [grid.cell(k) for k in range(grid.n_tokens)]
        cat = torch.stack([torch.cat([x[t, 2 * i, 2 * j], x[t, 2 * i, 2 * j + 1], x[t, 2 * i + 1, 2 * j],
                                      x[t, 2 * i + 1, 2 * j + 1]]) for t, i, j in cells])
        want = inner.multi_modal_projector(cat)
    assert got.embeds.shape == want.shape == (2 * 16, model.config.text_config.hidden_size)
    assert torch.allclose(got.embeds, want, atol=1e-5) and got.extras == []
