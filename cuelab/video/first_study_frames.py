"""Which frames Qwen3-VL saw in the first study's evaluation: a vLLM 0.11.0 server started with
`--media-io-kwargs '{"video": {"num_frames": 64}}'`, default OpenCV video loader, transformers 4.57's
Qwen3VLVideoProcessor behind it (fps 2, min 4, max 768 frames, temporal patch 2). docs/first-study-frames.md has
the source lines; in short:

- a clip of MORE than 64 frames: the loader keeps 64 at `np.linspace(0, T - 1, 64, dtype=int)` (truncated, not
  rounded) and tells the processor not to sample again;
- a clip of 64 frames or FEWER: the loader keeps every frame and the processor samples again at 2 fps:
  `int(T / fps * 2)` frames (at least 4, at most T) at `np.linspace(0, T - 1, n).round()`. No frame is repeated
  to reach 64; a 30-frame clip gives 5 frames;
- an odd count gets its last frame repeated once (the temporal patch is 2 frames);
- vLLM 0.11.0 wrote one `<t seconds>` before each temporal patch. For the processor-sampled clips it divided the
  source frame index by 2 (the sampling fps) instead of the source fps (vLLM PR 27104 fixed it after 0.11.0), so
  the prompt's times were 6x too large on 12 fps clips; `prompt_seconds` keeps them as written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_FRAMES = 64
PROCESSOR_FPS = 2.0
MIN_FRAMES = 4
MAX_FRAMES = 768
TEMPORAL_PATCH = 2


@dataclass(frozen=True)
class StudyEvalFrames:
    """indices: source frame indices in the order the model saw them (the temporal-patch repeat included);
    prompt_seconds: the time vLLM wrote before each temporal patch; source_seconds: the true time of each patch
    (mean of its two frames); sampled_by: "loader" (64 kept by vLLM) or "processor" (2 fps by transformers);
    stamp_indices, stamp_fps: the frame metadata (`frames_indices`, `fps`) from which a Qwen3-VL processor writes
    prompt_seconds (index / fps, averaged per temporal patch), one index a frame of `indices`."""

    indices: list[int]
    prompt_seconds: list[float]
    source_seconds: list[float]
    sampled_by: str
    stamp_indices: list[int]
    stamp_fps: float


def _patch_means(values: list[float], patch: int) -> list[float]:
    return [(values[k] + values[k + patch - 1]) / 2 for k in range(0, len(values), patch)]


def study_eval_frames(total_frames: int, source_fps: float = 12.0, num_frames: int = NUM_FRAMES,
                      processor_fps: float = PROCESSOR_FPS, min_frames: int = MIN_FRAMES,
                      max_frames: int = MAX_FRAMES, temporal_patch: int = TEMPORAL_PATCH) -> StudyEvalFrames:
    """The frames of a `total_frames`-frame clip at `source_fps` (the study's videos: 12 fps) that the study's
    server gave the model. Float operations follow the servers' own, so the counts agree at the edges."""
    if total_frames < 1 or source_fps <= 0:
        raise ValueError(f"need total_frames >= 1 and source_fps > 0, got {total_frames}, {source_fps}")
    duration = total_frames / source_fps
    if num_frames == -1 or total_frames < num_frames:
        loaded = list(range(total_frames))
    else:
        loaded = np.linspace(0, total_frames - 1, num_frames, dtype=int).tolist()
    loaded_fps = len(loaded) / duration  # what the loader reported as the clip's fps
    if len(loaded) == total_frames:  # the loader asks the processor to sample
        n = int(len(loaded) / loaded_fps * processor_fps)
        n = min(min(max(n, min_frames), max_frames), len(loaded))
        picks = np.linspace(0, len(loaded) - 1, n).round().astype(int).tolist()
        indices, stamp_idx, stamp_fps, by = [loaded[i] for i in picks], picks, processor_fps, "processor"
    else:
        indices, stamp_idx, stamp_fps, by = loaded, list(range(len(loaded))), loaded_fps, "loader"
    if len(indices) < temporal_patch:  # transformers' smart_resize refuses it: the request failed
        raise ValueError(f"a {total_frames}-frame clip gives {len(indices)} frame(s); Qwen3-VL needs "
                         f"{temporal_patch}")
    pad = -len(indices) % temporal_patch
    indices = indices + indices[-1:] * pad
    stamp_idx = stamp_idx + stamp_idx[-1:] * pad
    return StudyEvalFrames(indices, _patch_means([i / stamp_fps for i in stamp_idx], temporal_patch),
                           _patch_means([i / source_fps for i in indices], temporal_patch), by,
                           [int(i) for i in stamp_idx], float(stamp_fps))
