"""LLaVA-OneVision (family `llava_onevision`), what fits no table of tests/test_families.py: the real frame size's
grid, whose cells are the nearest whole pixel size."""

import torch

from tests.family_fixtures import tiny


def test_real_frame_size_grid_is_the_nearest_whole_pixel_cell():
    """384 px frames (27 patches a side, pooled to 14): 14 x 14 cells of 27 px (true 27.4), which the attention
    grid check accepts; the family's geometry without a processor is the real checkpoints' (384 px)."""
    from types import SimpleNamespace

    from cuelab.attention.grid import check_grid
    from cuelab.model.families.llava_onevision import build_processor

    fam = tiny("llava_onevision").fam
    processor = build_processor(tiny("llava_onevision").processor.tokenizer, 384)
    assert fam.geometry(processor) == fam.geometry() == fam.geometry(None) and processor.num_image_tokens == 729
    assert fam.geometry().size == (384, 384)
    grid = fam.video_grid({"pixel_values_videos": torch.zeros(1, 4, 3, 384, 384)}, processor)
    assert (grid.t, grid.h, grid.w, grid.cell_px) == (4, 14, 14, 27)
    check_grid(grid, SimpleNamespace(n=4, resized_height=384, resized_width=384))
