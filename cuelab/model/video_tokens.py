"""Where a model's video tokens sit: token k <-> (t, h, w) cell <-> sampled frames and resized-frame pixels.

For Qwen-VL models the processor cuts the sampled (already resized) frames into `patch` px patches, groups
`temporal_patch` frames in time and merges `merge` x `merge` patches into one language-model token, so merged
token k covers frames [2t, 2t + 2) of the sampled clip and a 32 x 32 block of the resized frame (Qwen3-VL); tokens
run t-major, then row, then column, and the k-th video placeholder of the prompt receives token k. A model family
gives the grid of its prompts (ModelFamily.video_grid); attention analysis reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoGrid:
    t: int  # temporal cells (frame pairs)
    h: int  # merged-token rows
    w: int  # merged-token columns
    patch: int = 16
    merge: int = 2
    temporal_patch: int = 2

    @classmethod
    def from_thw(cls, grid_thw, patch: int = 16, merge: int = 2, temporal_patch: int = 2) -> "VideoGrid":
        """From one row of the processor's `video_grid_thw` (T, H, W) in patches."""
        t, h, w = (int(x) for x in np.asarray(grid_thw).reshape(-1)[:3])
        if h % merge or w % merge:
            raise ValueError(f"grid {t}x{h}x{w} is not divisible by the merge size {merge}")
        return cls(t, h // merge, w // merge, patch, merge, temporal_patch)

    @property
    def cell_px(self) -> int:
        """Side of one token's block in resized-frame pixels (32)."""
        return self.patch * self.merge

    @property
    def n_tokens(self) -> int:
        return self.t * self.h * self.w

    def cell(self, k: int) -> tuple[int, int, int]:
        if not 0 <= k < self.n_tokens:
            raise IndexError(f"video token {k} outside 0..{self.n_tokens - 1}")
        per_frame = self.h * self.w
        return k // per_frame, (k % per_frame) // self.w, k % self.w

    def token(self, t: int, i: int, j: int) -> int:
        if not (0 <= t < self.t and 0 <= i < self.h and 0 <= j < self.w):
            raise IndexError(f"cell {(t, i, j)} outside grid {self.t}x{self.h}x{self.w}")
        return (t * self.h + i) * self.w + j

    def frames_of(self, t: int) -> list[int]:
        """Positions in the sampled clip (SampledFrames.frames) that temporal cell t covers."""
        return list(range(t * self.temporal_patch, (t + 1) * self.temporal_patch))

    def resized_rect(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) of cell (i, j) in resized-frame pixels (x2, y2 exclusive)."""
        c = self.cell_px
        return j * c, i * c, (j + 1) * c, (i + 1) * c

    def to_map(self, values: np.ndarray) -> np.ndarray:
        """(..., n_tokens) -> (..., t, h, w)."""
        values = np.asarray(values)
        return values.reshape(*values.shape[:-1], self.t, self.h, self.w)
