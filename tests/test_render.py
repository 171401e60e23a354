"""The renderer: layout, frame-accurate cues in the encoded output, `plain` = source up to the codec,
byte-identical reruns, resumability (also after a real SIGKILL), errors.jsonl, shards, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
from cuelab.video.render import output_path, render_videos, shard_ids, summary_path

ROOT = Path(__file__).resolve().parents[1]


def copy_videos(synth_dir: Path, dest: Path, n: int) -> tuple[Path, dict[str, VideoTracks]]:
    """n synthetic videos copied to a folder of our own (copies: a symlink would leave the data folder)."""
    ann = load_annotations(synth_dir / "annotations.json").videos
    ids = sorted(ann)[:n]
    dest.mkdir(parents=True, exist_ok=True)
    for vid in ids:
        shutil.copy(synth_dir / "videos" / f"{vid}.mp4", dest / f"{vid}.mp4")
    return dest, {v: ann[v] for v in ids}


def outputs(out_dir: Path) -> dict[str, tuple[int, int]]:
    """Every finished output -> (inode, mtime_ns): a file written again gets a new inode (atomic rename).
    Finished: the video and then its provenance sidecar are in place (a video without one is re-rendered)."""
    return {str(p.relative_to(out_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in out_dir.glob("*/*.mp4") if not p.name.startswith(".") and sidecar_path(p).is_file()}


def temp_files(out_dir: Path) -> list[Path]:
    return list(out_dir.glob("*/.*.mp4"))


@pytest.fixture()
def own_clip(tmp_path):
    """A 20-frame gray clip at 15 fps with odd size; object 0 is annotated on frames 3 and 10 only."""
    videos = tmp_path / "videos"
    write_video(videos / "clip.mp4", np.full((20, 61, 81, 3), 128, np.uint8), fps=15)
    tr = VideoTracks("clip", {"0": {3: (5.0, 5.0, 25.0, 25.0), 10: (40.0, 20.0, 70.0, 50.0)}})
    save_annotations(tmp_path / "ann.json", {"clip": tr}, gaps={"clip": set()})
    return videos, load_annotations(tmp_path / "ann.json").videos


def reddish(px) -> bool:
    r, g, b = (int(v) for v in px)
    return r > 170 and g < 90 and b < 90


def test_cue_lands_on_its_frame_in_the_encoded_video(own_clip, tmp_path):
    videos, ann = own_clip
    s = render_videos(videos, ann, ["box", "plain"], tmp_path / "out", workers=1, progress=False)
    assert s["rendered"] == 2 and s["failed"] == 0
    v = read_video(output_path(tmp_path / "out", "box", "clip"))
    assert v.fps == 15.0 and v.n_frames == 20 and (v.height, v.width) == (62, 82)  # fps kept, even size
    red_frames = [t for t in range(20) if reddish(v.frames[t, 35, 40])]  # left edge of frame 10's box
    assert red_frames == [10]
    assert reddish(v.frames[3, 15, 5]) and not reddish(v.frames[4, 15, 5])


def test_plain_differs_from_the_source_only_by_the_codec(synth_dir, tmp_path):
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 2)
    render_videos(videos, ann, ["plain"], tmp_path / "out", workers=1, progress=False)
    for vid in ann:
        src, out = read_video(videos / f"{vid}.mp4"), read_video(output_path(tmp_path / "out", "plain", vid))
        assert (out.n_frames, out.fps, out.frames.shape) == (src.n_frames, src.fps, src.frames.shape)
        assert np.abs(out.frames.astype(int) - src.frames).mean() < 2.0


def test_same_inputs_give_byte_identical_files(synth_dir, tmp_path):
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 3)
    cues = ["plain", "box", "trajectory", "shifted"]
    render_videos(videos, ann, cues, tmp_path / "a", workers=1, progress=False)
    render_videos(videos, ann, cues, tmp_path / "b", workers=2, progress=False)
    files = sorted(outputs(tmp_path / "a"))
    assert len(files) == 12 and files == sorted(outputs(tmp_path / "b"))
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_rerun_skips_finished_outputs_and_ignores_temp_leftovers(synth_dir, tmp_path):
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 4)
    out = tmp_path / "out"
    first = render_videos(videos, ann, ["plain", "box"], out, workers=1, progress=False)
    assert (first["rendered"], first["skipped"]) == (8, 0)
    vid = sorted(ann)[1]
    output_path(out, "box", vid).unlink()  # as if killed before this one was renamed into place
    (out / "box" / f".{vid}.abcd1234.mp4").write_bytes(b"half a video")  # the temp file it left
    before = outputs(out)
    second = render_videos(videos, ann, ["plain", "box"], out, workers=2, progress=False)
    assert (second["rendered"], second["skipped"], second["failed"]) == (1, 7, 0)
    after = outputs(out)
    assert {k: v for k, v in after.items() if k in before} == before, "finished outputs are not rewritten"
    assert read_video(output_path(out, "box", vid)).n_frames > 0
    assert not temp_files(out)
    assert json.loads((out / "render_summary.json").read_text())["skipped"] == 7


def test_a_corrupt_video_is_logged_and_the_others_render(synth_dir, tmp_path):
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 3)
    bad = sorted(ann)[0]
    (videos / f"{bad}.mp4").write_bytes((videos / f"{bad}.mp4").read_bytes()[:200])
    ann = dict(ann, ghost=VideoTracks("ghost", {"0": {0: (1, 1, 5, 5)}}))  # annotated, but no video file
    s = render_videos(videos, ann, ["plain", "box"], tmp_path / "out", workers=2, progress=False)
    assert (s["rendered"], s["failed"]) == (4, 4)
    rows = list(read_jsonl(tmp_path / "out" / "errors.jsonl"))
    assert sorted((r["video_id"], r["cue"]) for r in rows) == sorted(
        [(bad, "plain"), (bad, "box"), ("ghost", "plain"), ("ghost", "box")])
    assert all(r["reason"] for r in rows)
    assert any("corrupt" in r["reason"] or "truncated" in r["reason"] for r in rows if r["video_id"] == bad)
    assert not output_path(tmp_path / "out", "plain", bad).exists()


def test_a_video_without_annotations_renders_plain_only(own_clip, tmp_path):
    videos, ann = own_clip
    s = render_videos(videos, {}, ["plain", "box"], tmp_path / "out", workers=1, video_ids=["clip"],
                      progress=False)
    assert (s["rendered"], s["failed"]) == (1, 1)
    row = next(read_jsonl(tmp_path / "out" / "errors.jsonl"))
    assert row["cue"] == "box" and row["field"] == "annotations"


def test_shards_split_the_videos_without_overlap(synth_dir, tmp_path):
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 5)
    parts = [shard_ids(list(ann), (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(ann) and len(set(sum(parts, []))) == 5
    s = render_videos(videos, ann, ["plain"], tmp_path / "out", workers=1, shard=(1, 3), progress=False)
    assert s["rendered"] == len(parts[1])
    assert summary_path(tmp_path / "out", (1, 3)).name == "render_summary.shard1of3.json"
    assert summary_path(tmp_path / "out", (1, 3)).exists()
    assert sorted(p.stem for p in (tmp_path / "out" / "plain").glob("*.mp4")) == sorted(parts[1])


def test_a_shard_leaves_the_temp_files_of_other_shards_alone(synth_dir, tmp_path):
    """Shards run side by side in one output folder: a shard starting up cleans its own videos' leftovers
    only, never a file another shard is writing at that moment."""
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 4)
    mine, theirs = shard_ids(list(ann), (0, 2)), shard_ids(list(ann), (1, 2))
    out = tmp_path / "out"
    (out / "plain").mkdir(parents=True)
    leftover = out / "plain" / f".{mine[0]}.abcd1234.mp4"
    in_flight = out / "plain" / f".{theirs[0]}.wxyz5678.mp4"
    leftover.write_bytes(b"half a video")
    in_flight.write_bytes(b"being written by shard 1")
    s = render_videos(videos, ann, ["plain"], out, workers=1, shard=(0, 2), progress=False)
    assert s["rendered"] == len(mine)
    assert not leftover.exists() and in_flight.read_bytes() == b"being written by shard 1"


def test_killed_render_resumes_with_every_output_complete_and_none_rendered_twice(synth_dir, tmp_path):
    videos, ann = copy_videos(synth_dir, tmp_path / "videos", 12)
    ann_file = tmp_path / "ann.json"
    save_annotations(ann_file, ann)
    out = tmp_path / "out"
    cues = ["plain", "box", "trajectory", "blur_outside"]
    total = len(ann) * len(cues)
    cmd = [sys.executable, "-m", "cuelab.cli", "render", "--videos", str(videos), "--annotations", str(ann_file),
           "--cues", ",".join(cues), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the kill takes the workers too
    try:
        deadline = time.time() + 60
        while len(outputs(out)) < 4 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    survived = outputs(out)
    assert 0 < len(survived) < total, f"the kill should land midway ({len(survived)} of {total} done)"
    for rel in survived:
        assert read_video(out / rel).n_frames > 0, f"{rel} exists, so it must be complete"
    unsealed = len([p for p in out.glob("*/*.mp4") if not p.name.startswith(".")]) - len(survived)
    s = render_videos(videos, ann, cues, out, workers=2, progress=False)
    assert (s["rendered"], s["skipped"], s["failed"]) == (total - len(survived), len(survived), 0)
    assert s["stale"] == unsealed, "a video killed before its sidecar was written is rendered again"
    after = outputs(out)
    assert len(after) == total
    assert {k: after[k] for k in survived} == survived, "nothing finished before the kill is rendered again"
    assert not temp_files(out), "temp files of the killed run are cleaned up"
    for rel in after:
        v = read_video(out / rel)
        vid = Path(rel).stem
        assert v.n_frames == read_video(videos / f"{vid}.mp4").n_frames


def test_render_cli(own_clip, tmp_path):
    videos, ann = own_clip
    save_annotations(tmp_path / "a.json", ann)
    r = CliRunner().invoke(app, ["render", "--videos", str(videos), "--annotations", str(tmp_path / "a.json"),
                                 "--cues", "plain,box_trajectory,side_by_side", "--out", str(tmp_path / "out"),
                                 "--workers", "1", "--crf", "23"])
    assert r.exit_code == 0, r.output
    assert read_video(output_path(tmp_path / "out", "side_by_side", "clip")).width == 2 * 82
    r = CliRunner().invoke(app, ["render", "--videos", str(videos), "--annotations", str(tmp_path / "a.json"),
                                 "--cues", "plain,boxes", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "unknown cue 'boxes'" in r.output


def test_preview_cli_writes_a_gif_and_a_contact_sheet(own_clip, tmp_path):
    from PIL import Image

    videos, ann = own_clip
    save_annotations(tmp_path / "a.json", ann)
    r = CliRunner().invoke(app, ["preview", "--videos", str(videos), "--annotations", str(tmp_path / "a.json"),
                                 "--video-id", "clip", "--cues", "plain,box,side_by_side", "--out",
                                 str(tmp_path / "prev")])
    assert r.exit_code == 0, r.output
    gif, png = Image.open(tmp_path / "prev" / "preview_clip.gif"), Image.open(tmp_path / "prev" / "preview_clip.png")
    durations = []
    for i in range(gif.n_frames):  # PIL merges identical frames, adding up their durations
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert gif.n_frames >= 2 and sum(durations) == pytest.approx(20 / 15 * 1000, rel=0.1), "plays in real time"
    assert png.size[0] > png.size[1]
    sheet = np.asarray(png.convert("RGB"))
    assert (np.all(sheet == (230, 25, 25), axis=-1)).any(), "the red box is on the contact sheet"
