"""Measures on constructed attention rows whose answer is known, and their aggregation."""

import math

import numpy as np
import pytest
from scipy import stats

from cuelab.attention.grid import VideoGrid, box_cell_coverage, boxes_coverage
from cuelab.attention.measures import aggregate, lift, mean_ci, paired, question_measures, top_k
from cuelab.attention.plots import heat_frame, layer_mean_map

GRID = VideoGrid(t=2, h=4, w=5)  # frames 128 x 160
BOX = (32, 32, 96, 64)  # cells (1, 1) and (1, 2): 2 of 20 cells, 1/10 of the frame


def _coverage(box=BOX, grid=GRID):
    boxes = np.array([box] * (grid.t * 2), float)
    return boxes_coverage(grid, boxes)


def test_all_mass_inside_the_box_gives_frame_over_box_area():
    cov, valid = _coverage()
    rows = np.stack([cov / cov.sum(), np.full(GRID.n_tokens, 1 / GRID.n_tokens)])  # layer 0 inside, layer 1 uniform
    out = lift(rows, cov, valid)
    assert out[0] == pytest.approx((128 * 160) / (64 * 32))  # 10
    assert out[1] == pytest.approx(1.0)


def test_uniform_attention_has_lift_one_for_any_box():
    box = (13.5, 7.25, 101.0, 77.5)  # not aligned to cells
    cov, valid = _coverage(box)
    assert cov.sum() / GRID.t * (32 * 32) == pytest.approx((101 - 13.5) * (77.5 - 7.25))  # exact area
    assert lift(np.full((3, GRID.n_tokens), 0.01), cov, valid) == pytest.approx([1.0, 1.0, 1.0])


def test_attention_outside_the_box_gives_lift_below_one_and_cells_without_box_are_ignored():
    grid = VideoGrid(t=2, h=4, w=5)
    boxes = np.array([BOX, BOX, [np.nan] * 4, [np.nan] * 4], float)  # no box in the second frame pair
    cov, valid = boxes_coverage(grid, boxes)
    rows = np.zeros(grid.n_tokens)
    rows[grid.token(0, 1, 1)] = 1.0
    rows[grid.token(0, 3, 4)] = 1.0  # half inside, half outside in the valid pair
    rows[grid.token(1, 0, 0):] = 5.0  # heavy attention to the pair without a box: left out
    assert lift(rows, cov, valid) == pytest.approx(0.5 * 10)
    only_outside = np.zeros(grid.n_tokens)
    only_outside[grid.token(0, 3, 4)] = 1.0
    assert lift(only_outside, cov, valid) == 0.0


def test_sinks_are_left_out_in_the_ns_variant():
    cov, valid = _coverage()
    rows = np.full((1, GRID.n_tokens), 1.0)
    sink = GRID.token(0, 3, 4)
    rows[0, sink] = 1000.0  # a sink outside the box pulls lift far below 1
    sinks = top_k(rows, 1)
    assert sinks.tolist() == [[sink]]
    m = question_measures(rows, np.array([0.4]), cov, valid, sinks)
    assert m["lift"][0] < 0.1
    assert m["lift_ns"][0] == pytest.approx(1.0)
    assert m["mass_in"][0] == pytest.approx(4 / (1000 + 39))
    assert m["video_mass"].tolist() == [0.4]
    assert "cue_mass" not in m


def test_cue_and_object_only_measures():
    cov, valid = _coverage()
    cue = np.zeros(GRID.n_tokens)
    cue[GRID.token(0, 0, 0)] = cue[GRID.token(1, 0, 0)] = 1.0  # the cue drawn on cell (0, 0) only
    rows = np.zeros((1, GRID.n_tokens))
    rows[0, GRID.token(0, 0, 0)] = 3.0
    rows[0, GRID.token(0, 1, 1)] = 1.0
    m = question_measures(rows, np.array([1.0]), cov, valid, top_k(rows, 0), cue_cov=cue, obj_only_cov=cov)
    assert m["cue_mass"][0] == pytest.approx(0.75)
    assert m["cue_lift"][0] == pytest.approx(0.75 / (2 / 40))
    assert m["mass_in"][0] == pytest.approx(0.25)
    assert m["obj_only_lift"][0] == pytest.approx(2.5)


def test_per_head_rows_keep_head_lifts_and_average_heads_for_the_main_measure():
    cov, valid = _coverage()
    inside, uniform = cov / cov.sum(), np.full(GRID.n_tokens, 1 / GRID.n_tokens)
    rows = np.stack([np.stack([inside, uniform])] * 3)  # (layers 3, heads 2, n)
    m = question_measures(rows, np.full((3, 2), 0.5), cov, valid, top_k(rows.mean(1), 2))
    assert m["lift_heads"].shape == (3, 2)
    assert m["lift_heads"][:, 0] == pytest.approx([10, 10, 10]) and m["lift_heads"][:, 1] == pytest.approx([1, 1, 1])
    assert m["lift"] == pytest.approx(lift(rows.mean(1), cov, valid))
    assert m["video_mass"].tolist() == [0.5, 0.5, 0.5]


def test_mean_ci_is_the_t_interval_and_skips_undefined_values():
    x = [1.0, 2.0, 4.0, 7.0]
    m, lo, hi, n = mean_ci(x + [None, math.nan])
    t = stats.t.interval(0.95, 3, loc=np.mean(x), scale=stats.sem(x))
    assert (m, n) == (3.5, 4) and (lo, hi) == pytest.approx(t)
    assert math.isnan(mean_ci([2.0])[1]) and mean_ci([])[3] == 0


def _rec(model, cond, qid, lifts):
    return {"model": model, "condition": cond, "question_id": qid, "lift": lifts, "lift_ns": lifts}


def test_aggregate_and_paired_differences():
    recs = [_rec("pretrained", "plain", q, [1.0, 1.0 + i]) for i, q in enumerate("abc")]
    recs += [_rec("pretrained", "box", q, [2.0, 1.0 + 2 * i]) for i, q in enumerate("abc")]
    recs += [_rec("finetuned", "box", q, [3.0, None]) for q in "ab"]
    rows = {(r["model"], r["condition"], r["layer"]): r for r in aggregate(recs, ["lift"])}
    assert rows[("pretrained", "plain", 1)]["lift"] == pytest.approx(2.0)
    assert rows[("pretrained", "plain", "mean")]["lift"] == pytest.approx(1.5)
    assert rows[("finetuned", "box", 1)]["lift_n"] == 0 and rows[("finetuned", "box", 0)]["lift_n"] == 2
    diffs = {(d["comparison"], d["a"], d["layer"]): d for d in paired(recs)}
    box_vs_plain = diffs[("cue_vs_plain", "pretrained/box", 0)]
    assert box_vs_plain["lift_diff"] == pytest.approx(1.0) and box_vs_plain["lift_n"] == 3
    assert diffs[("cue_vs_plain", "pretrained/box", 1)]["lift_diff"] == pytest.approx(1.0)  # 0, 1, 2
    ft = diffs[("finetuned_vs_pretrained", "finetuned/box", 0)]
    assert ft["lift_diff"] == pytest.approx(1.0) and ft["lift_n"] == 2  # paired on the shared questions only


def test_heat_lands_on_the_cell_it_belongs_to():
    grid = VideoGrid(t=1, h=4, w=5)
    heat = np.zeros((4, 5))
    heat[2, 3] = 1.0
    frame = np.zeros((128, 160, 3), np.uint8)
    out = heat_frame(frame, heat, grid.cell_px, vmax=1.0, scale=2).astype(int).sum(-1)
    x1, y1, x2, y2 = (2 * v for v in grid.resized_rect(2, 3))
    hot = out > out.min() + 100
    assert hot[y1:y2, x1:x2].all() and hot.sum() == (x2 - x1) * (y2 - y1)
    assert layer_mean_map(np.array([[1.0, 3.0], [10.0, 10.0]])) == pytest.approx([0.375, 0.625])
    assert box_cell_coverage(grid, (0, 0, 160, 128)).sum() == 20
