"""Frame sizes read from the videos' headers, to clip annotation boxes before questions are built.

Something-Else boxes come without the size of their frame, so the annotation reader cannot tell a box wholly
outside the frame from one inside it. With the videos folder at hand, each annotated video's size is read
from its header (about 1-2 ms a video, nothing decoded) and its boxes are clipped to it: a box with no area
inside the frame is dropped, and an object left with no box gets no referential question and no hint (the
cue would mark nothing). The renderer clips the same way when it draws (cuelab.video.cues.Mark.build).
"""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image

from cuelab.errors import DataError
from cuelab.tracks import VideoTracks
from cuelab.video.io import find_video

_FRAME_EXTS = (".jpg", ".jpeg", ".png")


def frame_size(videos_dir: str | Path, video_id: str) -> tuple[int, int]:
    """(width, height) of a video file or frame folder, from its header. Raises DataError naming the file."""
    path = find_video(videos_dir, video_id)
    try:
        if path.is_dir():
            first = next((f for f in sorted(path.iterdir()) if f.suffix.lower() in _FRAME_EXTS), None)
            if first is None:
                raise DataError("frame folder holds no NNNN.jpg frames", file=str(path), video_id=video_id)
            with Image.open(first) as img:
                return img.size
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError("file holds no video stream", file=str(path), video_id=video_id)
            ctx = container.streams.video[0].codec_context
            if not ctx.width or not ctx.height:
                raise DataError("header gives no frame size", file=str(path), video_id=video_id)
            return ctx.width, ctx.height
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"cannot read the frame size ({type(e).__name__}: {e})", file=str(path),
                        video_id=video_id) from e


def clip_to_frames(annotations: dict[str, VideoTracks], videos_dir: str | Path,
                   ids: set[str] | None = None) -> tuple[dict[str, VideoTracks], dict]:
    """The annotations with the boxes of the videos in `ids` (default: all) clipped to their frames, and
    counts for the manifest: boxes clipped, boxes wholly outside the frame (dropped), the objects left with
    no box, and the videos whose size could not be read (kept as they are; the renderer reports them)."""
    out = dict(annotations)
    report = {"videos": str(videos_dir), "boxes_clipped": 0, "boxes_outside_frame": 0, "objects_outside_frame": 0,
              "objects_outside_first": [], "videos_without_size": 0, "size_errors": []}
    for vid in sorted(annotations if ids is None else set(annotations) & set(ids)):
        try:
            width, height = frame_size(videos_dir, vid)
        except DataError as e:
            report["videos_without_size"] += 1
            if len(report["size_errors"]) < 20:
                report["size_errors"].append(e.as_record())
            continue
        tracks = annotations[vid].clipped_to(width, height)
        out[vid] = tracks
        report["boxes_clipped"] += tracks.clipped - annotations[vid].clipped
        report["boxes_outside_frame"] += tracks.outside - annotations[vid].outside
        lost = [f"{vid}/{o}" for o in tracks.outside_objects if o not in annotations[vid].outside_objects]
        report["objects_outside_frame"] += len(lost)
        report["objects_outside_first"] += lost[:20 - len(report["objects_outside_first"])]
    return out, report
