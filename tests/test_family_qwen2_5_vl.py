"""Qwen2.5-VL (family `qwen2_5_vl`), what fits no table of tests/test_families.py: rope time positions from the
processor's second_per_grid_ts, and window attention in the vision tower."""

import pytest
import torch

from cuelab.evaluate.hf import HFScorer, reference_scores
from cuelab.model.prompt import build_inputs
from cuelab.model.tiny import small_test_config
from tests.family_fixtures import QUESTIONS, max_diff, sample, tiny


@pytest.mark.parametrize("fps", [2.0, 4.0])
def test_rope_time_axis_follows_second_per_grid_ts(fps):
    """Temporal patch k sits at k * tokens_per_second * second_per_grid_ts (2 frames at `fps`): the scorer's
    positions use the processor's value, so scores still equal the model's own forward."""
    t = tiny("qwen2_5_vl")
    fam, model, processor = t.fam, t.model, t.processor
    frames = t.frames(fps=fps)
    inputs = build_inputs(processor, QUESTIONS[0], frames)
    assert float(inputs["second_per_grid_ts"][0]) == pytest.approx(2 / fps)
    pixels = fam.video_pixels(inputs, torch.float32)
    pos, _ = fam.positions(model, inputs["input_ids"][0], inputs["mm_token_type_ids"][0], pixels)
    vis = inputs["input_ids"][0] == fam.video_token_id(model)
    times = pos[0, vis].unique(sorted=True)
    step = model.config.vision_config.tokens_per_second * 2 / fps
    assert torch.equal(times - times[0], (torch.arange(len(times)) * step).long())
    scorer = HFScorer(model, processor)
    fast = scorer.score(scorer.prepare(QUESTIONS[:1], frames))[0]
    assert max_diff(fast, t.reference(QUESTIONS[0], frames)) <= 1e-4


def test_window_attention_tower_keeps_the_token_order():
    """Two vision blocks (the first attends within 112 px windows, which permutes the patches) on frames four
    windows wide: the features the family scatters still give the model's own scores."""
    fam = tiny("qwen2_5_vl").fam
    model, processor = fam.build_tiny(small_test_config().model_copy(update={"vision_depth": 2}))
    assert model.config.vision_config.fullatt_block_indexes == [1]
    frames = sample(fam, processor, 5, h=112, w=448)
    scorer = HFScorer(model, processor)
    fast = scorer.score(scorer.prepare(QUESTIONS, frames))
    for q, f in zip(QUESTIONS, fast):
        assert max_diff(f, reference_scores(model, processor, q, frames)) <= 1e-4
