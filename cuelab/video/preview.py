"""Previews of one video under every cue, for the README and the report: a labelled PNG contact sheet
(rows = moments of the video, columns = cues) and an animated GIF (all cues side by side).

Frames are drawn by the same cue objects the renderer uses, straight from the decoded video (no re-encode),
so what is seen is what each cue draws. The GIF is written with PIL (imageio is not a dependency).
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_bytes, check_video_id
from cuelab.tracks import VideoTracks
from cuelab.video.cues import CUES
from cuelab.video.settings import RenderSettings
from cuelab.video.io import Video, find_video, read_video

HEADER = 22  # label strip height in pixels
GUTTER = 4


def cue_videos(video: Video, tracks: VideoTracks, cues: list[str],
               settings: RenderSettings = RenderSettings()) -> dict[str, np.ndarray]:
    """Every frame of `video` under each cue, drawn as the renderer draws it: name -> (T, H, W', 3)."""
    out = {}
    for name in cues:
        cue = settings.cue(name)
        layout = cue.layout(tracks, video.width, video.height)
        out[name] = np.stack([settings.frame(cue.draw(f, t, layout)) for t, f in enumerate(video.frames)])
    return out


def pick_times(video: Video, tracks: VideoTracks, n: int) -> list[int]:
    """n frame indices spread over the annotated part of the video (all of it when nothing is annotated)."""
    annotated = [t for t in tracks.annotated_frames if t < video.n_frames]
    pool = annotated or list(range(video.n_frames))
    idx = np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)
    return sorted({pool[i] for i in idx})


def _label(text: str, width: int, height: int = HEADER) -> np.ndarray:
    strip = np.full((height, width, 3), 255, np.uint8)
    scale = 0.45 if width >= 120 else 0.35
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (max(2, (width - tw) // 2), (height + th) // 2)
    cv2.putText(strip, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _resize(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1:
        return frame
    h, w = frame.shape[:2]
    interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA  # upscaling keeps the drawn lines crisp
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)


def _row(frames: list[np.ndarray]) -> np.ndarray:
    h = frames[0].shape[0]
    gap = np.full((h, GUTTER, 3), 255, np.uint8)
    parts = []
    for f in frames:
        parts += [f, gap]
    return np.concatenate(parts[:-1], axis=1)


def contact_sheet(drawn: dict[str, np.ndarray], times: list[int], scale: float = 1.0) -> np.ndarray:
    """A labelled grid: a header of cue names, then one row per frame index in `times`."""
    names = list(drawn)
    header = _row([_label(n, _resize(drawn[n][0], scale).shape[1]) for n in names])
    rows = [header]
    for t in times:
        cells = [_resize(drawn[n][t], scale) for n in names]
        row = _row(cells)
        tag = _label(f"frame {t}", 64, row.shape[0])
        rows.append(np.concatenate([tag, row], axis=1))
    width = max(r.shape[1] for r in rows)
    rows[0] = np.concatenate([_label("", width - header.shape[1]), header], axis=1)
    sep = np.full((GUTTER, width, 3), 255, np.uint8)
    out = []
    for r in rows:
        out += [r, sep]
    return np.concatenate(out[:-1], axis=0)


def gif_frames(drawn: dict[str, np.ndarray], scale: float) -> list[np.ndarray]:
    names = list(drawn)
    header = _row([_label(n, _resize(drawn[n][0], scale).shape[1]) for n in names])
    n = min(len(v) for v in drawn.values())
    return [np.concatenate([header, _row([_resize(drawn[k][t], scale) for k in names])], axis=0) for t in range(n)]


def _gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False)
    return buf.getvalue()


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_preview(videos_dir: str | Path, annotations: dict[str, VideoTracks], video_id: str,
                 cues: list[str] | None, out_dir: str | Path, *, n_times: int = 4,
                 settings: RenderSettings = RenderSettings(),
                 min_height: int = 200, max_gif_width: int = 1200, max_gif_fps: float = 6.0) -> tuple[Path, Path]:
    """Write out_dir/preview_<id>.gif and out_dir/preview_<id>.png; returns (gif_path, png_path).
    Small frames are enlarged (nearest neighbour, to at least `min_height`) so the cues can be seen; the GIF is
    scaled down to at most `max_gif_width` pixels wide and keeps every k-th frame so it plays at most
    `max_gif_fps` frames a second in real time (a README-sized file). `annotations`: the loaded tracks (the
    caller reads the file once, e.g. with cuelab.data.something_else.load_annotations)."""
    vid = check_video_id(video_id)
    if vid not in annotations:
        raise DataError("no box annotations for this video", video_id=vid, field="annotations")
    cues = list(cues) if cues else list(CUES)
    video = read_video(find_video(videos_dir, vid), vid)
    tracks = annotations[vid]
    drawn = cue_videos(video, tracks, cues, settings)
    scale = float(max(1, int(np.ceil(min_height / video.height))))
    sheet = contact_sheet(drawn, pick_times(video, tracks, n_times), scale)
    step = max(1, int(np.ceil(video.fps / max_gif_fps)))
    frames = gif_frames(drawn, scale)[::step]
    gif_scale = min(1.0, max_gif_width / frames[0].shape[1])
    if gif_scale < 1:
        frames = [_resize(f, gif_scale) for f in frames]
    out_dir = Path(out_dir)
    gif_path, png_path = out_dir / f"preview_{vid}.gif", out_dir / f"preview_{vid}.png"
    atomic_write_bytes(png_path, _png_bytes(sheet))
    atomic_write_bytes(gif_path, _gif_bytes(frames, video.fps / step))
    return gif_path, png_path
