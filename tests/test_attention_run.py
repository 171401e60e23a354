"""`cuelab attention` end to end on the tiny model and synthetic videos: results, curves, overlays, resume."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.config import SyntheticConfig
from cuelab.data.something_else import load_annotations
from cuelab.data.synthetic import generate
from cuelab.model.tiny import build_tiny_model, small_test_config
from cuelab.video.io import find_video, read_video, write_video

RESULT_FILES = ["attention_results.json", "attention_results.csv", "attention_paired.csv", "attention_heads.csv",
                "attention_lift.png"]


def _box_video(frames: np.ndarray, track: dict) -> np.ndarray:
    out = frames.copy()
    for t, box in track.items():
        if t < len(out):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(out[t], (x1, y1), (x2, y2), (255, 0, 0), 2)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("attn")
    generate(SyntheticConfig(videos=4, seed=1, min_seconds=2, max_seconds=3), root / "data")
    tracks = load_annotations(root / "data" / "annotations.json").videos
    questions = []
    for vid, tr in sorted(tracks.items()):
        v = read_video(find_video(root / "data" / "videos", vid))
        write_video(root / "videos" / "plain" / f"{vid}.mp4", v.frames, v.fps)
        if vid != "100003":  # one cued video missing: reported, the rest goes on
            write_video(root / "videos" / "box" / f"{vid}.mp4", _box_video(v.frames, tr.tracks["0"]), v.fps)
        questions.append({"id": f"{vid}-object-0", "video": vid, "kind": "object", "question": "What is moved?",
                          "choices": ["red cube", "blue ball", "green ring", "pink star"], "answer": "red cube",
                          "answer_index": 0, "target_object": "0", "split": "test"})
    questions.append({**questions[0], "id": "train-q", "split": "train"})  # never chosen
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    build_tiny_model(root / "tiny", small_test_config())
    return root


def _run(data: Path, out: Path, *extra: str):
    args = ["attention", "--model", str(data / "tiny"), "--questions", str(data / "questions.jsonl"),
            "--videos", str(data / "videos"), "--annotations", str(data / "data" / "annotations.json"),
            "--conditions", "plain,box", "--n", "4", "--out", str(out), "--per-head", "--device", "cpu",
            "--set", "attention.overlays=2", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_attention_command_end_to_end(data, tmp_path):
    out = tmp_path / "out"
    _run(data, out)
    results = json.loads((out / "attention_results.json").read_text())
    assert results["settings"]["questions"] == 4 and "train-q" not in results["settings"]["question_ids"]
    rows = {(r["model"], r["condition"], r["layer"]): r for r in results["rows"]}
    assert set(rows) == {("pretrained", c, layer) for c in ("plain", "box") for layer in (0, 1, "mean")}
    assert rows[("pretrained", "plain", 0)]["lift_n"] == 4 and rows[("pretrained", "box", 0)]["lift_n"] == 3
    for r in rows.values():
        assert 0 < r["lift"] < 50 and 0 < r["lift_ns"] < 50 and 0 < r["video_mass"] < 1
    assert rows[("pretrained", "box", 0)]["cue_mass"] > 0 and rows[("pretrained", "plain", 0)]["cue_mass"] is None
    assert {p["comparison"] for p in results["paired"]} == {"cue_vs_plain"}
    assert len(results["heads"]) == 2 * 2 * 2  # conditions x layers x heads
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["condition"], e["video_id"]) for e in errors] == [("box", "100003")]

    rec = json.loads((out / "records" / "pretrained__box.jsonl").read_text().splitlines()[0])
    assert rec["sinks_used"] == "plain" and 0 < rec["cue_share"] < rec["box_share"] * 2
    assert np.array(rec["lift_heads"]).shape == (2, 2)

    png = Image.open(out / "attention_lift.png")
    assert png.size[0] > 300 and png.size[1] > 300
    gifs = sorted((out / "overlays").glob("*.gif"))
    assert [g.name for g in gifs] == ["pretrained__100000-object-0__box.gif", "pretrained__100001-object-0__box.gif"]
    gif = Image.open(gifs[0])
    grid = rec["grid"]
    assert gif.n_frames == grid[0]
    panel_w, panel_h = 2 * 32 * grid[2], 2 * 32 * grid[1]  # each side upscaled x2 (160 px -> 320 px)
    assert gif.size == (2 * panel_w + 8, panel_h)
    assert (gifs[0].with_suffix(".png")).is_file()

    # rerun: nothing is recomputed, files are byte-identical
    files = RESULT_FILES + ["records/pretrained__plain.jsonl", "records/pretrained__box.jsonl"]
    before = {f: (out / f).read_bytes() for f in files}
    res = _run(data, out)
    assert "attention pretrained/plain" not in res.output  # all done; only the missing cued video is retried
    assert {f: (out / f).read_bytes() for f in files} == before

    # a run killed mid-write: one record lost, a partial line left; the rerun repairs it and agrees
    path = out / "records" / "pretrained__plain.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:40])
    _run(data, out)
    assert len(path.read_text().splitlines()) == 4
    after = json.loads((out / "attention_results.json").read_text())
    assert after["rows"] == results["rows"]


def test_same_config_gives_identical_files(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(data, a, "--set", "attention.overlays=0")
    _run(data, b, "--set", "attention.overlays=0")
    for f in RESULT_FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_no_usable_question_is_a_clear_error(data, tmp_path):
    qs = tmp_path / "q.jsonl"
    qs.write_text(json.dumps({"id": "x", "video": "100000", "question": "?", "choices": ["a", "b", "c", "d"],
                              "target_object": None, "split": "test"}) + "\n")
    res = CliRunner().invoke(app, ["attention", "--model", str(data / "tiny"), "--questions", str(qs),
                                   "--videos", str(data / "videos"), "--annotations",
                                   str(data / "data" / "annotations.json"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no test question has a target object with boxes" in " ".join(res.output.split())


def test_a_model_that_looks_at_the_red_box_scores_high_lift(data, monkeypatch):
    """Attention forced onto the tokens whose input patches hold the drawn red box (read from the model's own
    pixel_values_videos): the measures must find it inside the object box and on the cue."""
    import torch

    import cuelab.attention.collect as collect
    from cuelab.attention.run import measure_question
    from cuelab.config import ExperimentConfig
    from cuelab.model.load import load_model

    def looks_at_red(model, inputs, video_token_id, per_head=False):
        t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
        patches = inputs["pixel_values_videos"].reshape(t * h * w // 4, 4, 3, 2, 16, 16)  # token, 2x2, C, T, y, x
        r, g, b = patches[:, :, 0], patches[:, :, 1], patches[:, :, 2]  # normalised to [-1, 1]
        red = ((r > 0.6) & (g < -0.6) & (b < -0.6)).flatten(1).any(1)
        row = torch.where(red, 1.0, 1e-3).numpy()
        pos = np.flatnonzero(inputs["input_ids"][0].numpy() == video_token_id)
        return np.stack([row, np.full_like(row, 1.0)]), np.array([0.5, 0.5]), pos

    monkeypatch.setattr(collect, "attention_to_video", looks_at_red)
    model, processor = load_model(data / "tiny", attn_implementation="eager")
    tracks = load_annotations(data / "data" / "annotations.json").videos
    q = json.loads((data / "questions.jsonl").read_text().splitlines()[0])
    cfg = ExperimentConfig()
    box, *_ = measure_question(model, processor, q, "box", tracks[q["video"]], data / "videos", cfg, None, False)
    plain, *_ = measure_question(model, processor, q, "plain", tracks[q["video"]], data / "videos", cfg, None, False)
    assert box["lift"][0] > 5 and box["cue_lift"][0] > 5  # layer 0: on the red box
    assert box["lift"][1] == pytest.approx(1.0) and box["cue_lift"][1] == pytest.approx(1.0)  # layer 1: uniform
    assert plain["lift"][0] == pytest.approx(1.0)  # no red in the plain video: nothing to look at


def test_a_condition_that_changes_the_frame_size_is_refused(data):
    from cuelab.attention.run import measure_question
    from cuelab.config import ExperimentConfig
    from cuelab.errors import DataError
    from cuelab.model.load import load_model

    q = json.loads((data / "questions.jsonl").read_text().splitlines()[0])
    v = read_video(data / "videos" / "plain" / f"{q['video']}.mp4")
    write_video(data / "videos" / "wide" / f"{q['video']}.mp4", np.concatenate([v.frames, v.frames], axis=2), v.fps)
    model, processor = load_model(data / "tiny", attn_implementation="eager")
    tracks = load_annotations(data / "data" / "annotations.json").videos
    with pytest.raises(DataError, match="changes the frames") as e:
        measure_question(model, processor, q, "wide", tracks[q["video"]], data / "videos", ExperimentConfig(), None,
                         False)
    assert e.value.video_id == q["video"] and e.value.field == "condition"
