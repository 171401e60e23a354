"""Model families: each registered family is found from its model, config, processor and tokenizer, and its
pieces agree with the model's own forward (rows: one per family; a new family adds its row by registering)."""

import numpy as np
import pytest
import torch

from cuelab.errors import DataError
from cuelab.evaluate.hf import HFScorer, reference_scores
from cuelab.model.families import FAMILIES, family_of, get_family
from cuelab.model.prompt import build_inputs
from cuelab.model.tiny import small_test_config
from cuelab.video.io import FrameSpec, Video, sample_frames

QUESTION = {"id": "q1", "video": "v1", "kind": "object", "question": "What is the object in the red box?",
            "choices": ["red cube", "blue ball", "green cone"], "answer_index": 0}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def built(request):
    fam = get_family(request.param)
    torch.manual_seed(0)
    model, processor = fam.build_tiny(small_test_config())
    return fam, model.eval(), processor


def _frames(fam, processor):
    g = fam.geometry(processor)
    rng = np.random.default_rng(0)
    video = Video(rng.integers(0, 255, (24, 64, 96, 3), dtype=np.uint8), 12.0, "v1.mp4")
    spec = FrameSpec(fps=4.0, min_frames=4, max_frames=8, total_pixels=None, max_pixels_per_frame=64 * 96,
                     factor=g.factor, temporal_patch=g.temporal_patch, size=g.size)
    return sample_frames(video, spec, video_id="v1")


def test_family_is_found_from_model_config_processor_and_tokenizer(built):
    fam, model, processor = built
    assert family_of(model) is fam
    assert family_of(model.config.to_dict()) is fam
    assert family_of(processor) is fam
    by_tokenizer = family_of(processor.tokenizer)  # a tokenizer may be shared by families: its tokens must agree
    assert (by_tokenizer.end_token, by_tokenizer.video_token) == (fam.end_token, fam.video_token)
    assert family_of(fam.name) is fam


@pytest.mark.parametrize("obj", ["llama", {"model_type": "bert"}])
def test_unknown_family_names_the_field(obj):
    with pytest.raises(DataError, match="model family") as e:
        family_of(obj)
    assert e.value.field == "model.family"


def test_video_grid_covers_every_video_token(built):
    fam, model, processor = built
    frames = _frames(fam, processor)
    inputs = build_inputs(processor, QUESTION, frames)
    grid = fam.video_grid(inputs, processor)
    video = set(np.flatnonzero(inputs["input_ids"][0].numpy() == fam.video_token_id(model)).tolist())
    cells = fam.grid_positions(inputs["input_ids"], model)
    assert grid.n_tokens == len(cells) and set(cells.tolist()) <= video  # every cell is a video token
    assert len(video) - len(cells) <= 1  # at most one closing token (LLaVA-OneVision's newline) outside the grid
    assert grid.cell_px * grid.w == frames.resized_width and grid.cell_px * grid.h == frames.resized_height


def test_fast_scores_equal_one_forward_per_choice(built):
    fam, model, processor = built
    frames = _frames(fam, processor)
    scorer = HFScorer(model, processor)
    fast = scorer.score(scorer.prepare([QUESTION], frames))[0]
    ref = reference_scores(model, processor, QUESTION, frames)
    assert np.max(np.abs(np.array(fast.scores) - np.array(ref.scores))) <= 1e-4


def test_lora_layers_pattern_matches_only_the_language_model(built):
    import re

    fam, model, _ = built
    names = [n for n, _ in model.named_modules()]
    lm = [n for n in names if re.match(fam.lm_layer_prefix, n)]
    assert lm and all("visual" not in n and "vision" not in n for n in lm)
    assert any(n.endswith("q_proj") for n in lm)


def test_check_names_a_family_that_does_not_match_the_checkpoint(built, tmp_path):
    from cuelab.pipeline import check_model

    fam, model, processor = built
    model.save_pretrained(tmp_path)
    assert check_model(str(tmp_path), fam.name) == []
    other = next(f for f in FAMILIES if model.config.model_type not in FAMILIES[f].model_types)
    problems = check_model(str(tmp_path), other)
    assert len(problems) == 1 and problems[0].startswith(f"model.family: {other} does not match")


def test_speedups_keep_the_vision_features(built):
    """Each family's maths-preserving speed-ups (batched vision attention, ...) give the features of its own
    forward: frames wide enough for several vision windows and frame pairs."""
    import copy

    fam, model, processor = built
    rng = np.random.default_rng(1)
    g = fam.geometry(processor)
    video = Video(rng.integers(0, 255, (24, 120, 240, 3), dtype=np.uint8), 12.0, "v2.mp4")
    frames = sample_frames(video, FrameSpec(fps=4.0, min_frames=4, max_frames=8, total_pixels=None,
                                            max_pixels_per_frame=120 * 240, factor=g.factor,
                                            temporal_patch=g.temporal_patch, size=g.size), video_id="v2")
    pixels = fam.video_pixels(build_inputs(processor, QUESTION, frames), torch.float32)
    fast = copy.deepcopy(model)
    fam.speedups(fast)
    with torch.no_grad():
        ref, got = fam.video_features(model, [pixels], "cpu")[0], fam.video_features(fast, [pixels], "cpu")[0]
    assert torch.allclose(ref.embeds, got.embeds, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref.extras, got.extras))
