"""Cells of the video-token grid (cuelab.model.video_tokens.VideoGrid) <-> sampled frames and source pixel
rectangles, and cell coverage of boxes and masks (what attention lift is measured against)."""

from __future__ import annotations

import numpy as np

from cuelab.model.video_tokens import VideoGrid


def source_frames(grid: VideoGrid, frames, t: int) -> list[int]:
    """Source (original video) frame indices of temporal cell t; `frames` is a SampledFrames."""
    return [frames.indices[p] for p in grid.frames_of(t)]


def original_rect(grid: VideoGrid, frames, i: int, j: int) -> tuple[float, float, float, float]:
    """Cell (i, j) as a rectangle of the ORIGINAL frame (x2, y2 exclusive), undoing the sampling resize."""
    sx, sy = frames.scale()
    x1, y1, x2, y2 = grid.resized_rect(i, j)
    return x1 / sx, y1 / sy, x2 / sx, y2 / sy


def check_grid(grid: VideoGrid, frames) -> None:
    """The grid must match the sampled frames, or every mapping below is wrong."""
    c = grid.cell_px
    want = (frames.n // grid.temporal_patch, frames.resized_height // c, frames.resized_width // c)
    if (grid.t, grid.h, grid.w) != want:
        raise ValueError(f"video grid {(grid.t, grid.h, grid.w)} does not match the sampled frames {want}")


def video_token_positions(input_ids, video_token_id: int) -> np.ndarray:
    """Sequence positions of the video tokens (batch of one), in token order."""
    ids = np.asarray(input_ids.cpu() if hasattr(input_ids, "cpu") else input_ids).reshape(-1)
    return np.flatnonzero(ids == video_token_id)


def _overlap(lo: float, hi: float, size: int, n: int) -> np.ndarray:
    """Fraction of each of n cells of `size` px covered by the interval [lo, hi)."""
    edges = np.arange(n + 1, dtype=np.float64) * size
    return np.clip(np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1]), 0, size) / size


def box_cell_coverage(grid: VideoGrid, box) -> np.ndarray:
    """(h, w): the fraction of each cell's area inside `box` (x1, y1, x2, y2 in resized-frame pixels)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.outer(_overlap(y1, y2, grid.cell_px, grid.h), _overlap(x1, x2, grid.cell_px, grid.w))


def box_at(track: dict[int, tuple], frame: int, max_gap: int) -> tuple | None:
    """The box of `track` at source frame `frame`: its own, else the nearest annotated one within max_gap frames
    (annotations skip frames), else None."""
    if frame in track:
        return track[frame]
    best = None
    for f in track:
        d = abs(f - frame)
        if d <= max_gap and (best is None or d < best[0] or (d == best[0] and f < best[1])):
            best = (d, f)
    return track[best[1]] if best else None


def resized_boxes(track: dict[int, tuple], frames, max_gap: int = 6) -> np.ndarray:
    """(n_sampled, 4) boxes of one object in resized-frame pixels, clipped to the frame; NaN where unknown."""
    sx, sy = frames.scale()
    out = np.full((frames.n, 4), np.nan)
    for p, f in enumerate(frames.indices):
        b = box_at(track, f, max_gap)
        if b is not None:
            x1, y1, x2, y2 = b
            out[p] = (np.clip(x1 * sx, 0, frames.resized_width), np.clip(y1 * sy, 0, frames.resized_height),
                      np.clip(x2 * sx, 0, frames.resized_width), np.clip(y2 * sy, 0, frames.resized_height))
    return out


def boxes_coverage(grid: VideoGrid, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sampled-frame boxes (n_sampled, 4; NaN = unknown) -> (coverage (n_tokens,), valid (n_tokens,)).
    A token's coverage is the mean over the frames of its pair that have a box; a temporal cell with no box
    on either frame is not valid (left out of every measure)."""
    cov = np.zeros((grid.t, grid.h, grid.w))
    valid = np.zeros(grid.t, bool)
    for t in range(grid.t):
        maps = [box_cell_coverage(grid, boxes[p]) for p in grid.frames_of(t) if np.all(np.isfinite(boxes[p]))]
        if maps:
            cov[t] = np.mean(maps, axis=0)
            valid[t] = True
    return cov.reshape(-1), np.repeat(valid, grid.h * grid.w)


def mask_coverage(grid: VideoGrid, masks: np.ndarray) -> np.ndarray:
    """Pixel masks of the sampled frames (n_sampled, H, W) bool -> (n_tokens,) fraction of each token's pixels
    (over both frames of its pair) that are set."""
    n, hh, ww = masks.shape
    c = grid.cell_px
    if (n, hh, ww) != (grid.t * grid.temporal_patch, grid.h * c, grid.w * c):
        raise ValueError(f"masks {masks.shape} do not match grid {grid}")
    m = masks.reshape(grid.t, grid.temporal_patch, grid.h, c, grid.w, c).astype(np.float64)
    return m.mean(axis=(1, 3, 5)).reshape(-1)


def cue_pixels(cued: np.ndarray, plain: np.ndarray, threshold: int = 40) -> np.ndarray:
    """(n, H, W) bool: the pixels the cue drew (any channel differs by more than `threshold` from the plain
    frame; video coding noise stays well below it)."""
    if cued.shape != plain.shape:
        raise ValueError(f"cued frames {cued.shape} and plain frames {plain.shape} differ in shape")
    return (np.abs(cued.astype(np.int16) - plain.astype(np.int16)) > threshold).any(axis=-1)


def fill_pairs(grid: VideoGrid, boxes: np.ndarray) -> np.ndarray:
    """Where one frame of a pair has no box, give it its partner's box (the token covers both frames)."""
    out = boxes.copy()
    for t in range(grid.t):
        ps = grid.frames_of(t)
        known = [p for p in ps if np.all(np.isfinite(boxes[p]))]
        for p in ps:
            if known and p not in known:
                out[p] = boxes[known[0]]
    return out


def boxes_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, 4) resized-frame boxes (NaN = none) -> (n, height, width) bool pixel masks (pixel centres inside)."""
    out = np.zeros((len(boxes), height, width), bool)
    for p, b in enumerate(boxes):
        if np.all(np.isfinite(b)):
            x1, y1, x2, y2 = (int(round(v)) for v in b)
            out[p, max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return out
