"""One live run per output folder: a second `cuelab render` or `cuelab eval` into a folder another live process
holds is refused at once (exit 2, one message naming the holder's PID, host and command) without touching the
folder; once the holder is killed, its lock is taken over. Before, the second render deleted the first's
in-flight temp file and two evals appended every prediction twice."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.data.something_else import load_annotations, save_annotations
from cuelab.fsutil import read_jsonl
from cuelab.locks import FolderBusy, folder_lock
from cuelab.video.render import output_path, render_videos

ROOT = Path(__file__).resolve().parents[1]
HOLD = """import sys, time
from cuelab.locks import folder_lock
with folder_lock(sys.argv[1], sys.argv[2], (int(sys.argv[3]), int(sys.argv[4]))):
    print("held", flush=True)
    time.sleep(300)
"""


@contextmanager
def holder(folder: Path, task: str, shard: tuple[int, int] = (0, 1)):
    """Another process holding `task`'s lock on `folder` until it is SIGKILLed (at the latest on leaving)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), task, *map(str, shard)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the holder
        proc.wait()
        proc.stdout.close()


def free_in_another_process(folder: Path, task: str) -> bool:
    code = ("import sys\nfrom cuelab.locks import folder_lock\n"
            "with folder_lock(sys.argv[1], sys.argv[2]):\n    pass\n")
    return subprocess.run([sys.executable, "-c", code, str(folder), task], cwd=ROOT, capture_output=True).returncode == 0


@pytest.fixture()
def dataset(synth_dir, tmp_path):
    ann = load_annotations(synth_dir / "annotations.json").videos
    ids = sorted(ann)[:2]
    (tmp_path / "videos").mkdir()
    for vid in ids:
        shutil.copy(synth_dir / "videos" / f"{vid}.mp4", tmp_path / "videos")
    save_annotations(tmp_path / "ann.json", {v: ann[v] for v in ids})
    return tmp_path / "videos", tmp_path / "ann.json", ids


def test_a_second_render_into_a_held_folder_is_refused_and_takes_over_once_the_holder_dies(dataset, tmp_path):
    videos, ann_file, ids = dataset
    raw = json.loads(ann_file.read_text())
    ann_file.write_text(json.dumps({**raw, "999": "not a list of frames"}))  # one bad entry: errors.jsonl gets a line
    out = tmp_path / "out"
    args = ["render", "--videos", str(videos), "--annotations", str(ann_file), "--cues", "plain", "--out", str(out),
            "--workers", "1"]
    in_flight = out / "plain" / f".{ids[0]}.abcd1234.mp4"  # what the holder is writing at this moment
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"being written")
    with holder(out, "render") as first:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output  # old code: 0, having deleted the holder's temp file
        msg = " ".join(res.output.split())  # the console wraps long lines
        assert f"PID {first.pid} on host {socket.gethostname()}" in msg and "cuelab render" in msg
        assert "-c" in msg and "Traceback" not in res.output  # the holder's command line
        assert in_flight.read_bytes() == b"being written" and not output_path(out, "plain", ids[0]).exists()
        assert not (out / "errors.jsonl").exists(), "the refused run writes nothing into the folder"
    res = CliRunner().invoke(app, args)  # the holder was SIGKILLed: its lock is free, its temp file is stale
    assert res.exit_code == 0, res.output
    assert not in_flight.exists() and all(output_path(out, "plain", v).exists() for v in ids)
    assert [r["video_id"] for r in read_jsonl(out / "errors.jsonl")] == ["999"]
    assert free_in_another_process(out, "render"), "the lock is released when render returns"


def test_a_refused_render_exits_2_from_the_real_command(dataset, tmp_path):
    videos, ann_file, _ = dataset
    out = tmp_path / "out"
    with holder(out, "render") as first:
        res = subprocess.run([sys.executable, "-m", "cuelab.cli", "render", "--videos", str(videos),
                              "--annotations", str(ann_file), "--cues", "plain", "--out", str(out)],
                             cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, COLUMNS="400"), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"PID {first.pid}" in lines[0] and "error:" in lines[0], res.stderr


def test_shards_of_one_array_share_a_folder_and_other_shard_counts_are_refused(dataset, tmp_path):
    videos, ann_file, ids = dataset
    ann = load_annotations(ann_file).videos
    out = tmp_path / "out"
    with holder(out, "render", (0, 2)) as first:
        s = render_videos(videos, ann, ["plain"], out, workers=1, shard=(1, 2), progress=False)
        assert s["rendered"] == 1  # the sibling shard runs beside it
        for shard in ((0, 2), (0, 3), (0, 1)):  # the same shard, another count, the whole folder: overlap
            with pytest.raises(FolderBusy, match=f"PID {first.pid}"):
                render_videos(videos, ann, ["plain"], out, workers=1, shard=shard, progress=False)
        assert not (out / "render_summary.json").exists()


def test_the_lock_is_reentrant_within_one_process(dataset, tmp_path):
    """The pipeline may hold the folder's lock around its train-split and test-split render calls."""
    videos, ann_file, ids = dataset
    ann = load_annotations(ann_file).videos
    out = tmp_path / "out"
    with folder_lock(out, "render"):
        for vid in ids:
            assert render_videos(videos, ann, ["plain"], out, workers=2, video_ids=[vid], progress=False)["rendered"] == 1
        assert not free_in_another_process(out, "render")
    assert free_in_another_process(out, "render")


QUESTIONS = [{"id": f"q{k}", "video": "v1", "kind": "object", "question": "What is the object?",
              "choices": ["red cube", "blue ball", "green cone"], "answer_index": k % 3} for k in range(3)]


def test_a_second_eval_into_a_held_folder_is_refused_before_writing_a_line(tmp_path):
    from cuelab.config import ExperimentConfig
    from cuelab.evaluate.predictions import read_predictions
    from cuelab.evaluate.run import evaluate
    from cuelab.model.tiny import build_tiny_model, small_test_config

    model = build_tiny_model(tmp_path / "tiny", small_test_config())
    questions = tmp_path / "test.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    out = tmp_path / "out"
    cfg = ExperimentConfig()

    def run():
        return evaluate(cfg, model, questions_path=questions, out_dir=out, conditions=["blind"], blind=True,
                        hint=False, backend="hf", device="cpu", progress=False)

    with holder(out, "eval") as first:
        with pytest.raises(FolderBusy, match=f"PID {first.pid}"):
            run()  # old code: scored every question, a second copy of each line beside the first run's
        assert not (out / "predictions").exists() and not (out / "results.json").exists()
        res = CliRunner().invoke(app, ["eval", "--model", str(model), "--questions", str(questions),
                                       "--conditions", "blind", "--out", str(out), "--device", "cpu"])
        assert res.exit_code == 2 and f"PID {first.pid}" in " ".join(res.output.split()), res.output
    assert run()["scored"] == 3  # the holder is gone: its lock is taken over
    assert run()["scored"] == 0
    rows = read_predictions(out / "predictions" / "pretrained__blind.jsonl")
    lines = (out / "predictions" / "pretrained__blind.jsonl").read_text().splitlines()
    assert len(rows) == len(lines) == 3
