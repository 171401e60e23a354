"""The single-step commands a user runs by hand: `cuelab inspect` (on the real fixtures and on synthetic data, its
counts re-derived from the files themselves), `cuelab eval --shard` (shards together = one unsharded run) and
`cuelab results` (the numbers a run wrote)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from PIL import Image
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.fsutil import read_jsonl
from tests.conftest import fixture_path


def _cli(*args: str) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


# --- inspect ---------------------------------------------------------------------------------------------------

def _expected_rows(annotations: Path, size_and_frames) -> dict:
    """What `inspect` must say per annotated video, from the Something-Else JSON and the videos themselves."""
    rows = {}
    for vid, entries in json.loads(annotations.read_text()).items():
        width, height, n_frames = size_and_frames(vid)
        boxes = {}  # (object, frame) -> box, as the reader keys them
        for e in entries:
            t = int(e["name"].split("/")[1].split(".")[0])
            for lab in e["labels"]:
                oid = lab["gt_annotation"].replace("object ", "").strip()
                boxes[oid, t] = [lab["box2d"][k] for k in ("x1", "y1", "x2", "y2")]
        frames = {t for _, t in boxes}
        outside = [b for b in boxes.values() if min(b[2], width) <= max(b[0], 0) or min(b[3], height) <= max(b[1], 0)]
        beyond = [b for b in boxes.values() if b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height]
        rows[vid] = {"annotation_entries": len(entries), "last_annotated_frame": max(frames),
                     "annotation_gaps": max(frames) - min(frames) + 1 - len(frames),
                     "objects": sorted({o for o, _ in boxes}), "video_frames": n_frames, "size": [width, height],
                     "annotations_beyond_video": max(0, max(frames) - n_frames),
                     "boxes_clipped": len(beyond) - len(outside), "boxes_outside_frame": len(outside)}
    return rows


def _check_inspect(report: dict, labels: Path, annotations: Path, size_and_frames) -> dict:
    label_ids = {e["id"] for e in json.loads(labels.read_text())}
    expected = _expected_rows(annotations, size_and_frames)
    assert report["labels"]["entries"] == len(label_ids)
    assert report["annotations"]["videos"] == len(expected) and not report["annotations"]["errors"]
    assert report["annotations"]["with_label"] == sorted(label_ids & set(expected))
    assert set(report["frame_counts"]) == set(expected)
    for vid, want in expected.items():
        got = dict(report["frame_counts"][vid], objects=sorted(report["frame_counts"][vid]["objects"]))
        assert {k: got.get(k) for k in want} == want, vid
    return expected


def test_inspect_on_the_real_fixtures(tmp_path):
    root = fixture_path("something-else")
    frames = root / "frames"

    def size_and_frames(vid):
        jpgs = sorted((frames / vid).glob("*.jpg"))
        return (*Image.open(jpgs[0]).size, len(jpgs))

    report = json.loads(_cli("inspect", "--labels", root / "labels.json", "--annotations",
                             root / "annotations.json", "--videos", frames))
    expected = _check_inspect(report, root / "labels.json", root / "annotations.json", size_and_frames)
    # real Something-Else boxes do reach past the frame: each one clipped is counted
    assert report["annotations"]["outside_frame"]["boxes_clipped"] == \
        sum(r["boxes_clipped"] for r in expected.values()) > 0


def test_inspect_on_synthetic_data(synth_dir):
    def size_and_frames(vid):
        with av.open(str(synth_dir / "videos" / f"{vid}.mp4")) as c:
            frames = [f for f in c.decode(video=0)]
        return frames[0].width, frames[0].height, len(frames)

    report = json.loads(_cli("inspect", "--labels", synth_dir / "labels.json", "--annotations",
                             synth_dir / "annotations.json", "--videos", synth_dir / "videos"))
    expected = _check_inspect(report, synth_dir / "labels.json", synth_dir / "annotations.json", size_and_frames)
    assert any(r["annotation_gaps"] for r in expected.values())  # the generator leaves gaps, as the real data


def test_boxes_past_the_frame_in_a_real_format_file_are_clipped_and_counted(tmp_path):
    """Something-Else boxes come without a frame size: with the videos at hand, a box reaching past the frame
    is clipped and counted, one wholly outside it is counted apart (and its object reported when it has no
    other box)."""
    frames = tmp_path / "frames"
    for vid in ("7", "8"):
        (frames / vid).mkdir(parents=True)
        for t in range(1, 4):
            Image.new("RGB", (100, 80), (90, 90, 90)).save(frames / vid / f"{t:04d}.jpg")

    def entry(vid, t, *labels):
        return {"name": f"{vid}/{t:04d}.jpg", "gt_placeholders": ["a cup"], "nr_instances": len(labels),
                "labels": [{"box2d": dict(zip(("x1", "y1", "x2", "y2"), box)), "gt_annotation": f"object {o}",
                            "category": "cup", "standard_category": "0000"} for o, box in labels]}

    ann = {"7": [entry("7", 1, ("0", (-10, 5, 50, 300)), ("1", (1, 1, 20, 20))),  # 0 reaches past two edges
                 entry("7", 2, ("0", (10, 5, 50, 60)), ("1", (120, 10, 150, 30))),  # 1 wholly right of the frame
                 entry("7", 3, ("0", (90, 70, 110, 95)))],  # past the bottom-right corner
           "8": [entry("8", 1, ("0", (5, 5, 30, 30)), ("1", (-40, -40, -5, -5)))]}  # 1 only ever outside
    (tmp_path / "annotations.json").write_text(json.dumps(ann))
    (tmp_path / "labels.json").write_text(json.dumps([{"id": "7", "label": "lifting a cup", "template":
                                                       "Lifting [something]", "placeholders": ["a cup"]}]))
    report = json.loads(_cli("inspect", "--labels", tmp_path / "labels.json", "--annotations",
                             tmp_path / "annotations.json", "--videos", frames))
    rows = report["frame_counts"]
    assert (rows["7"]["boxes_clipped"], rows["7"]["boxes_outside_frame"]) == (2, 1)
    assert (rows["8"]["boxes_clipped"], rows["8"]["boxes_outside_frame"]) == (0, 1)
    assert rows["8"]["objects_outside_frame"] == ["1"] and rows["7"]["objects_outside_frame"] == []
    assert report["annotations"]["outside_frame"] == {"boxes_clipped": 2, "boxes_outside_frame": 2,
                                                      "objects": ["8/1"]}


# --- eval --shard and results ----------------------------------------------------------------------------------

def _rows(folder: Path) -> dict:
    """Prediction rows by (file stem without the shard part, question id); a question twice is an error."""
    out = {}
    for f in sorted(folder.glob("*.jsonl")):
        for r in read_jsonl(f):
            key = (f.name.split(".")[0], r["question_id"])
            assert key not in out, f"{key} twice"
            out[key] = r
    return out


@pytest.mark.slow
def test_eval_shards_together_are_the_unsharded_run(demo_quick_run, tmp_path):
    """Two `cuelab eval --shard i/2` jobs into one folder score every question once, as the run's own
    (unsharded) eval stage did, with the same scores; their merged results.json holds the same numbers."""
    run = demo_quick_run
    out = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        _cli("eval", "--model", run / "models" / "pretrained", "--adapter", run / "models" / "finetune" / "final",
             "--base-name", "pretrained", "--questions", run / "questions" / "test.jsonl", "--videos", run / "videos",
             "--conditions", "plain,box", "--no-blind", "--config", run / "config.yaml", "--out", out,
             "--shard", shard)
    files = sorted(p.name for p in (out / "predictions").glob("*.jsonl"))
    assert files == sorted(f"{m}__{c}.shard{i}of2.jsonl" for m in ("finetuned", "pretrained")
                           for c in ("plain", "box") for i in (0, 1))
    shard_videos = [{r["video"] for r in read_jsonl(out / "predictions" / f"finetuned__plain.shard{i}of2.jsonl")}
                    for i in (0, 1)]
    assert shard_videos[0] and shard_videos[1] and not shard_videos[0] & shard_videos[1]  # split by video
    whole = {k: v for k, v in _rows(run / "predictions").items() if k[0].split("__")[1] in ("plain", "box")}
    sharded = _rows(out / "predictions")
    assert set(sharded) == set(whole) and len(whole) == 4 * len(list(read_jsonl(run / "questions" / "test.jsonl")))
    for key, r in whole.items():
        s = sharded[key]
        assert (s["choice_index"], s["correct"]) == (r["choice_index"], r["correct"]), key
        assert s["scores"] == pytest.approx(r["scores"], abs=1e-4), key
    merged = json.loads((out / "results.json").read_text())["accuracy"]
    want = [a for a in json.loads((run / "results.json").read_text())["accuracy"] if a["condition"] in ("plain", "box")]
    key = lambda a: (a["model"], a["condition"], a["kind"])  # noqa: E731
    assert sorted(merged, key=key) == sorted(want, key=key)


@pytest.mark.slow
def test_results_command_gives_the_numbers_of_the_run(demo_quick_run, tmp_path):
    output = _cli("results", "--predictions", demo_quick_run / "predictions", "--out", tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == \
        json.loads((demo_quick_run / "results.json").read_text())
    assert (tmp_path / "results.csv").read_text() == (demo_quick_run / "results.csv").read_text()
    plain = next(a for a in json.loads((tmp_path / "results.json").read_text())["accuracy"]
                 if (a["model"], a["condition"], a["kind"]) == ("finetuned", "plain", "all"))
    assert f"{100 * plain['accuracy']:.1f}" in output  # the table on the console shows them too
