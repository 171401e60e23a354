"""Load a dataset through the readers and report what it holds: how many label entries and annotated videos,
annotation vs video frame counts, boxes clipped to the frame or wholly outside it, which labelled videos have
boxes, and what could not be read."""

from __future__ import annotations

from pathlib import Path

from cuelab.data.something_else import load_annotations
from cuelab.data.ssv2 import load_labels
from cuelab.errors import DataError
from cuelab.video.io import find_video, read_video


def frame_counts(annotations_path: Path, videos_dir: Path) -> dict:
    """Per annotated video: annotation entries, last annotated frame, decoded video frames, gaps, and the boxes
    clipped to the frame or wholly outside it (with the objects that have no box inside it)."""
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
            inside = tr.clipped_to(video.width, video.height)
            row.update(boxes_clipped=inside.clipped, boxes_outside_frame=inside.outside,
                       objects_outside_frame=inside.outside_objects)
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
            rows = frame_counts(annotations, videos)["videos"]
            report["frame_counts"] = rows
            report["annotations"]["outside_frame"] = {
                k: sum(r.get(k, 0) for r in rows.values()) for k in ("boxes_clipped", "boxes_outside_frame")}
            report["annotations"]["outside_frame"]["objects"] = [
                f"{vid}/{o}" for vid, r in rows.items() for o in r.get("objects_outside_frame", [])]
    return report
