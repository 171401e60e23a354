"""Load a dataset through the readers and report what it holds: how many label entries and annotated videos,
annotation vs video frame counts, which labelled videos have boxes, and what could not be read."""

from __future__ import annotations

from pathlib import Path

from cuelab.data.something_else import load_annotations
from cuelab.data.ssv2 import load_labels
from cuelab.errors import DataError
from cuelab.video.io import find_video, read_video


def frame_counts(annotations_path: Path, videos_dir: Path) -> dict:
    """Per annotated video: annotation entries, last annotated frame, decoded video frames, gaps."""
    ann = load_annotations(annotations_path, strict=False)
    rows: dict[str, dict] = {}
    for vid, tr in ann.videos.items():
        row = {"annotation_entries": tr.n_entries, "last_annotated_frame": tr.last_frame + 1,
               "objects": tr.objects(include_hand=True)}
        frames = tr.annotated_frames
        row["annotation_gaps"] = (frames[-1] - frames[0] + 1 - len(frames)) if frames else 0
        try:
            video = read_video(find_video(videos_dir, vid), vid)
            row["video_frames"] = video.n_frames
            row["size"] = [video.width, video.height]
            row["annotations_beyond_video"] = max(0, tr.last_frame + 1 - video.n_frames)
        except DataError as e:
            row["video_error"] = str(e)
        rows[vid] = row
    return {"videos": rows, "errors": [e.as_record() for e in ann.errors]}


def inspect_dataset(labels: Path | None, annotations: Path | None, videos: Path | None) -> dict:
    report: dict = {}
    entries = load_labels(labels) if labels else []
    if labels:
        report["labels"] = {"file": str(labels), "entries": len(entries),
                            "templates": len({e.template for e in entries})}
    if annotations:
        ann = load_annotations(annotations, strict=False)
        ids = {e.id for e in entries}
        report["annotations"] = {"file": str(annotations), "videos": len(ann.videos),
                                 "with_label": sorted(v for v in ann.videos if v in ids),
                                 "errors": [e.as_record() for e in ann.errors]}
        if videos:
            report["frame_counts"] = frame_counts(annotations, videos)["videos"]
    return report
