"""Render provenance: a rerun re-renders an output whose source video, boxes, cue settings or codec settings
changed (it used to skip any output that existed), counts those as stale, and `--force` re-renders all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.data.something_else import load_annotations, save_annotations
from cuelab.fsutil import read_jsonl
from cuelab.tracks import VideoTracks
from cuelab.video.io import read_video, write_video
from cuelab.video.provenance import sidecar_path
from cuelab.video.render import output_path, render_videos
from cuelab.video.settings import RenderSettings


@pytest.fixture()
def two(synth_dir, tmp_path):
    """Two synthetic videos copied to a folder of our own, with their tracks."""
    ann = load_annotations(synth_dir / "annotations.json").videos
    ids = sorted(ann)[:2]
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in ids:
        shutil.copy(synth_dir / "videos" / f"{vid}.mp4", videos / f"{vid}.mp4")
    return videos, {v: ann[v] for v in ids}, ids


def inode(out: Path, cue: str, vid: str) -> tuple[int, int]:
    """An output written again is a new file with a new mtime (the inode number alone may be reused)."""
    st = output_path(out, cue, vid).stat()
    return st.st_ino, st.st_mtime_ns


def render(videos, ann, out, **kw):
    return render_videos(videos, ann, ["plain", "box"], out, workers=1, progress=False, **kw)


def test_a_source_video_changed_at_the_same_path_is_rendered_again(two, tmp_path):
    videos, ann, (a, b) = two
    out = tmp_path / "out"
    assert render(videos, ann, out)["rendered"] == 4
    before = {c: inode(out, c, b) for c in ("plain", "box")}
    src = videos / f"{a}.mp4"
    mtime = src.stat().st_mtime_ns
    frames = read_video(src).frames
    write_video(src, 255 - frames, fps=12)  # new pixels, same path, same frame count
    os.utime(src, ns=(mtime, mtime))  # even with the old mtime
    s = render(videos, ann, out)
    assert (s["rendered"], s.get("stale"), s["skipped"], s["failed"]) == (2, 2, 2, 0)  # old code: skipped 4
    plain = read_video(output_path(out, "plain", a)).frames
    assert np.abs(plain.astype(int) - (255 - frames)).mean() < 3.0  # the output shows the new source
    assert {c: inode(out, c, b) for c in ("plain", "box")} == before  # the untouched video is not rewritten
    again = render(videos, ann, out)
    assert (again["rendered"], again["skipped"]) == (0, 4)


def test_changed_boxes_rerender_the_cued_output_not_plain(two, tmp_path):
    videos, ann, (a, b) = two
    out = tmp_path / "out"
    render(videos, ann, out)
    plain, box = inode(out, "plain", a), output_path(out, "box", a).read_bytes()
    obj = sorted(ann[a].tracks)[0]
    moved = {t: (x1 + 5, y1, x2 + 5, y2) for t, (x1, y1, x2, y2) in ann[a].tracks[obj].items()}
    ann = {**ann, a: VideoTracks(a, {**ann[a].tracks, obj: moved})}
    s = render(videos, ann, out)
    assert (s["rendered"], s.get("stale"), s["skipped"]) == (1, 1, 3)
    assert inode(out, "plain", a) == plain and output_path(out, "box", a).read_bytes() != box


def test_changed_settings_and_missing_sidecars_rerender(two, tmp_path):
    videos, ann, (a, b) = two
    out = tmp_path / "out"
    render(videos, ann, out)
    s = render(videos, ann, out, settings=RenderSettings(include_hand=True))  # a cue setting: the cued outputs only
    assert (s.get("stale"), s["skipped"]) == (2, 2)
    s = render(videos, ann, out, settings=RenderSettings(include_hand=True, crf=23))  # a codec setting: every output
    assert (s.get("stale"), s["skipped"]) == (4, 0)
    sidecar_path(output_path(out, "box", b)).unlink()  # an output of an older cuelab, or killed before its sidecar
    s = render(videos, ann, out, settings=RenderSettings(include_hand=True, crf=23))
    assert (s.get("stale"), s["skipped"]) == (1, 3)
    stored = json.loads(sidecar_path(output_path(out, "box", b)).read_text())
    assert stored["provenance"]["codec"]["crf"] == 23 and stored["provenance"]["cue_settings"]["include_hand"]


def test_a_frame_folder_source_changed_is_rendered_again(tmp_path):
    import cv2

    folder = tmp_path / "videos" / "clip"
    folder.mkdir(parents=True)
    for t in range(6):
        cv2.imwrite(str(folder / f"{t + 1:04d}.jpg"), np.full((48, 64, 3), 40 * t, np.uint8))
    ann = {"clip": VideoTracks("clip", {"0": {0: (5.0, 5.0, 30.0, 30.0)}})}
    out = tmp_path / "out"
    assert render(tmp_path / "videos", ann, out)["rendered"] == 2
    cv2.imwrite(str(folder / "0003.jpg"), np.full((48, 64, 3), 250, np.uint8))
    s = render(tmp_path / "videos", ann, out)
    assert (s["rendered"], s.get("stale"), s["skipped"]) == (2, 2, 0)


def test_a_stale_output_whose_rerender_fails_is_removed(two, tmp_path):
    """An outdated video must not stay behind for eval to read when its source can no longer be decoded."""
    videos, ann, (a, b) = two
    out = tmp_path / "out"
    render(videos, ann, out)
    (videos / f"{a}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    s = render(videos, ann, out)
    assert (s.get("stale"), s["failed"], s["skipped"]) == (2, 2, 2)
    assert not output_path(out, "plain", a).exists() and not output_path(out, "box", a).exists()
    assert {r["video_id"] for r in read_jsonl(out / "errors.jsonl")} == {a}


def test_force_and_the_cli_report(two, tmp_path):
    videos, ann, (a, b) = two
    save_annotations(tmp_path / "ann.json", ann, gaps={v: set() for v in ann})
    out = tmp_path / "out"
    args = ["render", "--videos", str(videos), "--annotations", str(tmp_path / "ann.json"), "--cues", "plain,box",
            "--out", str(out), "--workers", "1"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = {(c, v): inode(out, c, v) for c in ("plain", "box") for v in (a, b)}
    src = videos / f"{a}.mp4"
    write_video(src, 255 - read_video(src).frames, fps=12)
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "rendered 2 (2 stale: re-rendered), skipped 2 (up to date)" in res.output
    res = runner.invoke(app, args + ["--force"])
    assert res.exit_code == 0 and "rendered 4 (4 forced: re-rendered), skipped 0" in res.output
    assert all(inode(out, c, v) != before[c, v] for c, v in before)
    assert json.loads((out / "render_summary.json").read_text())["force"] is True
    s = render_videos(videos, ann, ["plain"], out, workers=1, progress=False, force=True)
    assert (s["rendered"], s["forced"], s["skipped"]) == (2, 2, 0)


def test_outputs_of_a_missing_source_are_kept_and_counted_unverified(two, tmp_path):
    """A source folder taken offline must not cost the renders: they are kept, and said to be unchecked."""
    videos, ann, (a, b) = two
    out = tmp_path / "out"
    render(videos, ann, out)
    (videos / f"{a}.mp4").unlink()
    s = render(videos, ann, out)
    assert (s["rendered"], s.get("unverified"), s["skipped"], s["failed"]) == (0, 2, 2, 0)
    assert output_path(out, "plain", a).exists() and output_path(out, "box", a).exists()
