"""Decode and encode videos with PyAV, and the ONE frame-sampling function every stage uses.

Accepted inputs: `<id>.webm` (SSv2, VP9), `<id>.mp4`, or a folder of JPEG frames `<id>/0001.jpg` (12 fps).
Encoding is libx264 (crf 18 by default), yuv420p, even width and height, the source fps kept.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
from av.video.reformatter import VideoReformatter
import cv2
import numpy as np

from cuelab.errors import DataError
from cuelab.fsutil import check_video_id, safe_join

VIDEO_EXTS = (".webm", ".mp4", ".mkv", ".avi", ".mov")
FRAME_FOLDER_FPS = 12.0  # Something-Else frames are extracted at 12 fps
_FRAME_RE = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


class VideoError(DataError):
    """A video that cannot be read or written; names the file and video id."""


@dataclass
class Video:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float
    path: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def find_video(videos_dir: str | Path, video_id: str) -> Path:
    """The file or frame folder of `video_id` inside `videos_dir` (never outside it)."""
    vid = check_video_id(video_id)
    for ext in VIDEO_EXTS:
        p = safe_join(videos_dir, vid + ext, video_id=vid)
        if p.is_file():
            return p
    p = safe_join(videos_dir, vid, video_id=vid)
    if p.is_dir():
        return p
    raise VideoError(f"no video <id>.webm/.mp4 or frame folder <id>/ in {videos_dir}", file=str(videos_dir),
                     video_id=vid)


def _read_frame_folder(path: Path, video_id: str | None) -> Video:
    files = sorted((f for f in path.iterdir() if _FRAME_RE.match(f.name)), key=lambda f: int(f.name.split(".")[0]))
    if not files:
        raise VideoError("frame folder holds no NNNN.jpg frames", file=str(path), video_id=video_id)
    frames = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"cannot decode frame {f.name}", file=str(f), video_id=video_id)
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    shapes = {fr.shape for fr in frames}
    if len(shapes) != 1:
        raise VideoError(f"frames differ in size: {sorted(shapes)}", file=str(path), video_id=video_id)
    return Video(np.stack(frames), FRAME_FOLDER_FPS, str(path))


def _expected_frames(container, stream, fps: float) -> int | None:
    """Frame count the header promises (to detect truncated files that still decode partly)."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return int(round(float(stream.duration * stream.time_base) * fps))
    if container.duration:
        return int(round(container.duration / av.time_base * fps))
    return None


def read_video(path: str | Path, video_id: str | None = None) -> Video:
    """Decode every frame (RGB uint8). A corrupt or truncated file raises VideoError, never a crash."""
    path = Path(path)
    if video_id is None:
        video_id = path.stem if path.is_file() else path.name
    if path.is_dir():
        return _read_frame_folder(path, video_id)
    if not path.is_file():
        raise VideoError("video file not found", file=str(path), video_id=video_id)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("file holds no video stream", file=str(path), video_id=video_id)
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else FRAME_FOLDER_FPS
            expected = _expected_frames(container, stream, fps)
            # One reformatter for the whole stream keeps its swscale context; a fresh one per frame
            # (frame.to_ndarray(format="rgb24")) was the largest cost of decoding small clips.
            reformatter = VideoReformatter()
            for frame in container.decode(stream):
                frames.append(reformatter.reformat(frame, format="rgb24").to_ndarray())
    except VideoError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as e:
        raise VideoError(f"cannot decode video ({type(e).__name__}: {e}); the file may be corrupt or truncated",
                         file=str(path), video_id=video_id) from e
    if not frames:
        raise VideoError("no frame could be decoded; the file may be corrupt or truncated", file=str(path),
                         video_id=video_id)
    # A cut WebM decodes its first part without any error: compare with the length its header gives.
    if expected and len(frames) < expected - max(2, round(0.05 * expected)):
        raise VideoError(f"decoded {len(frames)} of the {expected} frames its header promises; the file is "
                         f"truncated or corrupt", file=str(path), video_id=video_id)
    return Video(np.stack(frames), fps, str(path))


def even_frames(frames: np.ndarray) -> np.ndarray:
    """Pad to even width and height by repeating the last row/column (libx264 with yuv420p needs it)."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def _even_frame(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return frame


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, crf: int = 18,
                preset: str = "veryfast", threads: int = 1) -> None:
    """Encode RGB frames (an array (T, H, W, 3) or any iterable of (H, W, 3) frames, so callers can stream)
    to an H.264 MP4, atomically (temp file + rename): the output exists only once complete.
    One encoder thread by default: output is then bit-identical for the same frames, and parallelism comes
    from the process pool. RGB -> yuv420p (limited-range BT.601) is done by OpenCV, which is much faster
    than PyAV's per-frame swscale setup."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    n = 0
    try:
        with av.open(tmp, "w", format="mp4") as out:
            stream = None
            for fr in frames:
                fr = _even_frame(np.ascontiguousarray(fr, dtype=np.uint8))
                if fr.ndim != 3 or fr.shape[2] != 3:
                    raise ValueError(f"frames must be (H, W, 3) RGB, got {fr.shape}")
                if stream is None:
                    stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = fr.shape[1], fr.shape[0], "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
                    stream.codec_context.thread_count = threads
                elif fr.shape[:2] != (stream.height, stream.width):
                    raise ValueError(f"frame {n} is {fr.shape[1]}x{fr.shape[0]}, the video "
                                     f"{stream.width}x{stream.height}")
                yuv = av.VideoFrame.from_ndarray(cv2.cvtColor(fr, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
                for packet in stream.encode(yuv):
                    out.mux(packet)
                n += 1
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode():
                out.mux(packet)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are data others read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# The one frame-sampling function: which frames a model sees, at which size, with their metadata.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameSpec:
    """How frames are chosen and sized. Mirrors config.FramesConfig (kept here so video/ has no config import)."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 32
    total_pixels: int | None = 1_304_576  # pixel budget over all sampled frames (None: per-frame cap only)
    max_pixels_per_frame: int = 256 * 416
    min_pixels_per_frame: int = 32 * 32
    factor: int = 32  # patch 16 x spatial merge 2
    temporal_patch: int = 2
    # (width, height) every frame is resized to, for models that see a fixed frame size (LLaVA-OneVision,
    # InternVL, SmolVLM); None: Qwen-VL's rule (smart_resize with `factor` and the pixel budget)
    size: tuple[int, int] | None = None
    # "fps": sample_indices (fps within min/max frames). "first_study_vllm": the frames the first study's vLLM 0.11
    # server gave Qwen3-VL (cuelab.video.first_study_frames; fps and min/max frames unused, the pixel settings
    # apply); its `timestamps` are "prompt" (the times vLLM 0.11 wrote, 6x too large on clips it resampled: what
    # the study's model read) or "source" (the true times)
    rule: str = "fps"
    timestamps: str = "prompt"

    def __post_init__(self):
        if self.rule not in ("fps", "first_study_vllm"):
            raise ValueError(f"unknown frame rule {self.rule!r} (fps, first_study_vllm)")
        if self.timestamps not in ("prompt", "source"):
            raise ValueError(f"unknown timestamps {self.timestamps!r} (prompt, source)")


@dataclass
class SampledFrames:
    """Frames a model sees (already resized: processors must not resize again) and how they were chosen."""

    frames: np.ndarray  # (T, h, w, 3) uint8 RGB, T a multiple of temporal_patch
    indices: list[int]  # source frame index of each sampled frame
    source_fps: float
    total_frames: int
    width: int  # original size
    height: int
    resized_width: int
    resized_height: int
    video_id: str = ""
    extra: dict = field(default_factory=dict)
    # what the processor is told (its frame timestamps are index / fps); None: the source's (indices, source_fps)
    meta_indices: list[int] | None = None
    meta_fps: float | None = None

    @property
    def n(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        return self.total_frames / self.source_fps

    @property
    def sampled_fps(self) -> float:
        """Effective frames per second of the sampled clip (what timestamps are computed from)."""
        return self.n / self.duration if self.duration > 0 else self.source_fps

    @property
    def timestamps(self) -> list[float]:
        return [i / self.source_fps for i in self.indices]

    def scale(self) -> tuple[float, float]:
        """(sx, sy): multiply original-frame pixel coordinates by these to get resized-frame coordinates."""
        return self.resized_width / self.width, self.resized_height / self.height

    def metadata_fields(self) -> dict:
        """The video metadata every processor path gets (transformers, vLLM offline and server): the prompt's
        frame timestamps are frames_indices / fps, averaged per temporal patch."""
        idx = self.indices if self.meta_indices is None else self.meta_indices
        fps = self.source_fps if self.meta_fps is None else self.meta_fps
        return {"total_num_frames": int(self.total_frames), "fps": float(fps), "width": int(self.width),
                "height": int(self.height), "duration": float(self.duration),
                "frames_indices": [int(i) for i in idx]}

    def video_metadata(self):
        """transformers' VideoMetadata for `do_sample_frames=False` (indices explicit)."""
        from transformers.video_utils import VideoMetadata

        return VideoMetadata(**self.metadata_fields())


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's rule: sides rounded to multiples of `factor`, area kept within [min_pixels, max_pixels]."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def sample_indices(total_frames: int, source_fps: float, spec: FrameSpec) -> list[int]:
    """Evenly spaced frame indices at spec.fps, clamped to [min_frames, max_frames], rounded down to a multiple
    of the temporal patch. A clip of fewer frames than that count shows frames more than once, spread evenly
    (rounded linspace: 3 frames -> [0, 1, 1, 2]), so each sampled frame keeps its true time."""
    duration = total_frames / source_fps
    n = int(round(duration * spec.fps))
    n = max(spec.min_frames, min(spec.max_frames, n))
    n = max(spec.temporal_patch, (n // spec.temporal_patch) * spec.temporal_patch)
    return [int(round(x)) for x in np.linspace(0, total_frames - 1, n)]


def _study_indices(video: Video, spec: FrameSpec, video_id: str) -> tuple[list[int], dict]:
    """first_study_vllm: the study's indices (with its temporal-patch repeat, so no processor pads again) and,
    for prompt timestamps, the metadata that makes the processor write vLLM 0.11's times."""
    from cuelab.video.first_study_frames import study_eval_frames

    try:
        r = study_eval_frames(video.n_frames, video.fps, temporal_patch=spec.temporal_patch)
    except ValueError as e:
        raise VideoError(f"frames rule first_study_vllm: {e}", file=video.path, video_id=video_id) from e
    return r.indices, {"meta_indices": r.stamp_indices, "meta_fps": r.stamp_fps} if spec.timestamps == "prompt" else {}


def _resized_size(video: Video, spec: FrameSpec, n_frames: int) -> tuple[int, int]:
    """(height, width) the sampled frames are resized to: the fixed size, or smart_resize within the budget."""
    if spec.size is not None:
        return spec.size[1], spec.size[0]
    per_frame = spec.max_pixels_per_frame
    if spec.total_pixels:
        per_frame = min(per_frame, spec.total_pixels // n_frames)
    per_frame = max(per_frame, spec.min_pixels_per_frame)
    return smart_resize(video.height, video.width, spec.factor, spec.min_pixels_per_frame, per_frame)


def sample_frames(video: Video | str | Path, spec: FrameSpec, video_id: str = "") -> SampledFrames:
    """THE frame-sampling function: training, both evaluation backends and attention all call this."""
    if not isinstance(video, Video):
        video = read_video(video, video_id or None)
    video_id = video_id or Path(video.path).stem
    if spec.rule == "first_study_vllm":
        idx, more = _study_indices(video, spec, video_id)
    else:
        idx, more = sample_indices(video.n_frames, video.fps, spec), {}
    rh, rw = _resized_size(video, spec, len(idx))
    frames = video.frames[idx]
    if (rh, rw) != (video.height, video.width):
        frames = np.stack([cv2.resize(f, (rw, rh), interpolation=cv2.INTER_AREA) for f in frames])
    return SampledFrames(frames=np.ascontiguousarray(frames), indices=idx, source_fps=video.fps,
                         total_frames=video.n_frames, width=video.width, height=video.height,
                         resized_width=rw, resized_height=rh, video_id=video_id, **more)
