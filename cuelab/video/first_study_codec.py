"""How the first study encoded its plain and cued videos (github 4g/visual_cues, annotate.py: `resave_video`,
`annotate_video`, `write_video`): every decoded frame, CROPPED to even width and height (the last row/column
dropped), written at 12 fps whatever the source rate, libx264 crf 18 through torchvision's `write_video`
(PyAV, yuv420p, no preset given, so libx264's default "medium").

cuelab's own writer (cuelab.video.io.write_video) PADS odd sizes by repeating the last row/column; it pads only
odd sizes, so frames passed through `crop_even` first are written uncropped and unpadded.
"""

from __future__ import annotations

import numpy as np

STUDY_FPS = 12.0
STUDY_CRF = 18
STUDY_PRESET = "medium"  # libx264's default: the study passed only {"crf": "18"}


def crop_even(frames: np.ndarray) -> np.ndarray:
    """A frame (H, W, C) or a clip (T, H, W, C) cropped to even height and width, as the study did
    (`frames[:, :(H // 2) * 2, :(W // 2) * 2, :]`). A view, not a copy."""
    if frames.ndim not in (3, 4):
        raise ValueError(f"expected (H, W, C) or (T, H, W, C), got shape {frames.shape}")
    h, w = frames.shape[-3], frames.shape[-2]
    return frames[..., : h - h % 2, : w - w % 2, :]
