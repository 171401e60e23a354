"""What every rendered pixel depends on beyond the source video and its boxes: one value handed from the config
to the renderer, the preview and the provenance check (instead of crf/preset/hand flags passed one by one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from cuelab.video.cues import CUES, Cue, FirstStudyCue, get_cue

PRESET = "veryfast"


@dataclass(frozen=True)
class RenderSettings:
    crf: int = 18
    preset: str = PRESET
    include_hand: bool = False
    fps: float | None = None  # output frame rate; None: the source's (frames are never resampled)
    even: Literal["pad", "crop"] = "pad"  # odd sizes padded (cuelab) or cropped (the first study)
    seed: int = 0  # cues with random colours (the first study's) draw them from the run's seed and the video id

    @classmethod
    def from_config(cls, render_cfg, seed: int = 0) -> "RenderSettings":
        return cls(crf=render_cfg.crf, preset=render_cfg.preset, include_hand=render_cfg.include_hand,
                   fps=render_cfg.fps, even=render_cfg.even, seed=seed)

    def cue(self, name: str) -> Cue:
        """The cue `name` drawn with these settings (only the cues that take a seed get one)."""
        style = {"include_hand": self.include_hand}
        if name in CUES and issubclass(CUES[name], FirstStudyCue):
            style["seed"] = self.seed
        return get_cue(name, **style)

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """A drawn frame as it is encoded: cropped to even size under `even: crop` (write_video pads the rest)."""
        if self.even == "crop":
            h, w = frame.shape[:2]
            return frame[: h - h % 2, : w - w % 2]
        return frame

    def codec(self) -> dict:
        """What write_video encodes with (io.write_video: libx264, yuv420p, even size, one thread)."""
        return {"codec": "libx264", "crf": self.crf, "preset": self.preset, "pix_fmt": "yuv420p", "threads": 1,
                "fps": self.fps if self.fps is not None else "source fps as a fraction with denominator <= 1001",
                "size": "source, cropped to even" if self.even == "crop" else "source, padded to even"}

    def to_json(self) -> dict:
        return asdict(self)
