"""Video token <-> cell <-> pixels: painting one cell of the input changes exactly the token the mapping names."""

import numpy as np
import pytest
import torch

from cuelab.attention.grid import (VideoGrid, box_at, box_cell_coverage, boxes_coverage, check_grid, cue_pixels,
                                   mask_coverage, original_rect, resized_boxes, source_frames,
                                   video_token_positions)
from cuelab.model.prompt import build_inputs
from cuelab.model.tiny import build_tiny, small_test_config
from cuelab.video.io import SampledFrames

QUESTION = {"id": "q", "video": "v", "question": "What is pushed?", "choices": ["red cube", "blue ball",
                                                                                "green ring", "pink star"]}


def _frames(n=6, h=96, w=128, orig=(120, 160), seed=0) -> SampledFrames:
    rng = np.random.default_rng(seed)
    fr = rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    return SampledFrames(frames=fr, indices=[3 * i for i in range(n)], source_fps=12.0, total_frames=3 * n,
                         width=orig[1], height=orig[0], resized_width=w, resized_height=h, video_id="v")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(small_test_config())


def _video_tokens(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    return torch.cat(out.pooler_output)


@pytest.mark.parametrize("cell", [(0, 0, 0), (1, 2, 1), (2, 1, 3)])
def test_painting_one_cell_changes_exactly_its_token(tiny, cell):
    model, processor = tiny
    frames = _frames()
    inputs = build_inputs(processor, QUESTION, frames)
    grid = VideoGrid.from_thw(inputs["video_grid_thw"][0])
    check_grid(grid, frames)
    assert (grid.t, grid.h, grid.w) == (3, 3, 4)
    positions = video_token_positions(inputs["input_ids"], model.config.video_token_id)
    assert len(positions) == grid.n_tokens

    t, i, j = cell
    painted = _frames()
    x1, y1, x2, y2 = grid.resized_rect(i, j)
    for p in grid.frames_of(t):
        painted.frames[p, y1:y2, x1:x2] = 255 - painted.frames[p, y1:y2, x1:x2]
    painted_inputs = build_inputs(processor, QUESTION, painted)
    assert torch.equal(painted_inputs["input_ids"], inputs["input_ids"])

    # With the vision blocks' residual branches switched off, each merged token sees only its own patches:
    # exactly one token may change, and it must be the one the mapping names.
    plain_model = type(model)(model.config).eval()
    plain_model.load_state_dict(model.state_dict())
    for block in plain_model.model.visual.blocks:
        for lin in (block.attn.proj, block.mlp.linear_fc2):
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
    diff = (_video_tokens(plain_model, inputs) - _video_tokens(plain_model, painted_inputs)).abs().amax(-1)
    changed = torch.nonzero(diff > 1e-6).flatten().tolist()
    assert changed == [grid.token(t, i, j)]
    assert grid.cell(changed[0]) == cell

    # The intact tower mixes tokens within a frame pair, but the painted token still changes most.
    diff = (_video_tokens(model, inputs) - _video_tokens(model, painted_inputs)).abs().amax(-1)
    assert int(diff.argmax()) == grid.token(t, i, j)
    other_pairs = [k for k in range(grid.n_tokens) if grid.cell(k)[0] != t]
    assert float(diff[other_pairs].max()) < 1e-6  # frame pairs are encoded independently


def test_cell_maps_back_to_source_frames_and_original_pixels():
    frames = _frames(orig=(120, 160))  # resized 96 x 128: scale 0.8
    grid = VideoGrid(t=3, h=3, w=4)
    assert source_frames(grid, frames, 1) == [6, 9]
    assert original_rect(grid, frames, 2, 1) == pytest.approx((40.0, 80.0, 80.0, 120.0))
    assert grid.token(*grid.cell(17)) == 17
    with pytest.raises(IndexError):
        grid.cell(grid.n_tokens)
    with pytest.raises(ValueError, match="does not match"):
        check_grid(VideoGrid(t=2, h=3, w=4), frames)


def test_box_coverage_is_exact_and_follows_the_track():
    grid = VideoGrid(t=3, h=3, w=4)
    cov = box_cell_coverage(grid, (16, 0, 64, 32))  # half of cell (0,0), all of (0,1)
    assert cov[0, 0] == pytest.approx(0.5) and cov[0, 1] == pytest.approx(1.0) and cov.sum() == pytest.approx(1.5)
    frames = _frames(orig=(120, 160))
    # annotated at source frames 0 and 9 only; 3 is 3 frames from 0, 15 is 6 from 9, 12 is 3 from 9
    track = {0: (0, 0, 40, 40), 9: (40, 40, 80, 80)}
    assert box_at(track, 3, max_gap=3) == (0, 0, 40, 40)
    assert box_at(track, 15, max_gap=3) is None
    boxes = resized_boxes(track, frames, max_gap=3)
    assert np.allclose(boxes[0], (0, 0, 32, 32)) and np.allclose(boxes[3], (32, 32, 64, 64))
    assert np.isnan(boxes[5]).all()
    cover, valid = boxes_coverage(grid, boxes)
    assert valid.reshape(3, -1).all(axis=1).tolist() == [True, True, True]
    assert cover.reshape(3, 3, 4)[0, 0, 0] == pytest.approx(1.0)
    no_box = np.full((6, 4), np.nan)
    assert not boxes_coverage(grid, no_box)[1].any()


def test_cue_pixels_and_mask_coverage():
    grid = VideoGrid(t=1, h=2, w=2)
    plain = np.full((2, 64, 64, 3), 100, np.uint8)
    cued = plain.copy()
    cued[0, 0:32, 0:32] = (255, 0, 0)  # the whole cell (0, 0) of the first frame of the pair
    cued[1, 40:42, 40:60] = (100, 100, 110)  # below the threshold: coding noise, not a cue
    mask = cue_pixels(cued, plain)
    assert mask.sum() == 32 * 32
    assert mask_coverage(grid, mask).tolist() == [0.5, 0.0, 0.0, 0.0]
