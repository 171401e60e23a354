"""The pipeline runner: a stage is skipped when its fingerprint matches, redone when its config, its input files
or any stage upstream of it changed; a subset of stages never runs on stale upstream outputs; `--check` names
inputs that are missing or not in their format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cuelab.config import load_config
from cuelab.errors import DataError
from cuelab.pipeline import check, fingerprints, run_pipeline

TINY = ["data.synthetic.videos=4", "data.synthetic.min_seconds=1", "data.synthetic.max_seconds=1",
        "questions.test_videos=1", "model.tiny={}"]


def _cfg(tmp_path, *extra):
    return load_config(None, [f"output_dir={tmp_path}", *TINY, *extra])


def test_stage_skipped_when_done_and_redone_when_config_changes(tmp_path):
    cfg = _cfg(tmp_path)
    first = run_pipeline(cfg, ["data"])
    assert (tmp_path / "dataset" / "labels.json").exists() and "seconds" in first["data"]
    mtime = (tmp_path / "dataset" / "labels.json").stat().st_mtime_ns
    run_pipeline(cfg, ["data"])
    assert (tmp_path / "dataset" / "labels.json").stat().st_mtime_ns == mtime  # skipped
    cfg2 = _cfg(tmp_path, "data.synthetic.videos=5")
    assert fingerprints(cfg2)["data"] != fingerprints(cfg)["data"]
    run_pipeline(cfg2, ["data"])
    assert len(list((tmp_path / "dataset" / "videos").glob("*.mp4"))) == 5


def test_an_upstream_change_reruns_every_stage_after_it(tmp_path):
    """A new synthetic seed makes new data: the questions must be rebuilt from it, not kept from the old data."""
    run_pipeline(_cfg(tmp_path), ["data", "questions"])
    before = (tmp_path / "questions" / "test.jsonl").read_text()
    done = run_pipeline(_cfg(tmp_path, "data.synthetic.seed=1"), ["data", "questions"])
    assert "parts" in done["questions"]  # rerun, not the old marker
    assert (tmp_path / "questions" / "test.jsonl").read_text() != before
    labels = {e["id"]: e["label"] for e in json.loads((tmp_path / "dataset" / "labels.json").read_text())}
    for q in map(json.loads, (tmp_path / "questions" / "test.jsonl").read_text().splitlines()):
        assert q["label"] == labels[q["video"]]


@pytest.mark.parametrize("override, changed, unchanged", [
    ("questions.test_videos=2", {"questions", "render", "model", "pretrain", "train", "eval", "attention", "report"},
     {"data"}),
    ("data.synthetic.seed=1", {"data", "questions", "train", "eval", "report"}, set()),
    ("train.lr=2e-4", {"train", "eval", "attention", "report"}, {"data", "questions", "render", "model", "pretrain"}),
    # a new evaluation condition: render makes its videos, but nothing trained is redone
    ("eval.conditions=[plain,box,spotlight]", {"render", "eval", "report"},
     {"data", "questions", "model", "pretrain", "train", "attention"}),
    ("report.title=x", {"report"}, {"data", "questions", "render", "train", "eval", "attention"}),
])
def test_fingerprints_chain_downstream(tmp_path, override, changed, unchanged):
    a, b = fingerprints(_cfg(tmp_path)), fingerprints(_cfg(tmp_path, override))
    assert {s for s in changed if a[s] == b[s]} == set(), "stages that should rerun"
    assert {s for s in unchanged if a[s] != b[s]} == set(), "stages that should be kept"


def _real_cfg(tmp_path, labels, annotations, videos, model="tiny"):
    over = [f"output_dir={tmp_path / 'run'}", "data.source=ssv2", f"data.labels={labels}",
            f"data.annotations={annotations}", f"data.videos={videos}"]
    return load_config(None, over + (["model.tiny={}"] if model == "tiny" else [f"model.name_or_path={model}"]))


def _real_inputs(tmp_path, synth_dir):
    return synth_dir / "labels.json", synth_dir / "annotations.json", synth_dir / "videos"


def test_input_file_edited_in_place_counts(tmp_path, synth_dir):
    labels = tmp_path / "labels.json"
    labels.write_bytes((synth_dir / "labels.json").read_bytes())
    cfg = _real_cfg(tmp_path, labels, synth_dir / "annotations.json", synth_dir / "videos")
    before = fingerprints(cfg)
    entries = json.loads(labels.read_text())
    entries[0]["placeholders"] = ["a different thing"] * len(entries[0]["placeholders"])
    labels.write_text(json.dumps(entries))  # same path, same config
    after = fingerprints(cfg)
    assert all(before[s] != after[s] for s in ("data", "questions", "eval", "report"))


def test_a_subset_of_stages_refuses_stale_upstream(tmp_path):
    run_pipeline(_cfg(tmp_path), ["data", "questions"])
    with pytest.raises(DataError, match="stage data is not up to date.*config data changed"):
        run_pipeline(_cfg(tmp_path, "data.synthetic.seed=1"), ["questions"])
    with pytest.raises(DataError, match=r"stage render is not up to date for this config \(not run yet\)"):
        run_pipeline(_cfg(tmp_path), ["train"])  # model/pretrain/render never ran
    assert "seed: 1" not in (tmp_path / "config.yaml").read_text()  # a refused run leaves the run's config alone
    run_pipeline(_cfg(tmp_path), ["questions"])  # up to date upstream: fine (and skipped)


def test_check_names_missing_real_inputs(tmp_path):
    cfg = load_config(None, ["data.source=ssv2", f"data.labels={tmp_path}/nope.json",
                             "model.name_or_path=Qwen/Qwen3-VL-2B-Instruct"])
    missing = "\n".join(check(cfg))
    assert "nope.json does not exist" in missing and "data.annotations: not set" in missing
    assert "Qwen/Qwen3-VL-2B-Instruct" in missing


def test_check_accepts_real_format_inputs(tmp_path, synth_dir):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen3_vl"}')
    (model / "model.safetensors").write_bytes(b"x")
    assert check(_real_cfg(tmp_path, *_real_inputs(tmp_path, synth_dir), model=str(model))) == []


def _broken(tmp_path, synth_dir, what):
    labels, annotations, videos = _real_inputs(tmp_path, synth_dir)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "qwen3_vl"}')
    (model / "model.safetensors").write_bytes(b"x")
    if what == "labels as a dict":
        labels = tmp_path / "labels.json"
        labels.write_text(json.dumps({e["id"]: e for e in json.loads((synth_dir / "labels.json").read_text())}))
    elif what == "annotations as a list":
        annotations = tmp_path / "annotations.json"
        annotations.write_text(json.dumps(list(json.loads((synth_dir / "annotations.json").read_text()).values())))
    elif what == "a single video as the folder":
        videos = next((synth_dir / "videos").glob("*.mp4"))
    elif what == "unreadable videos":
        videos = tmp_path / "videos"
        videos.mkdir()
        for e in json.loads((synth_dir / "labels.json").read_text()):
            (videos / f"{e['id']}.mp4").write_bytes(b"not a video")
    elif what == "an empty config.json":
        (model / "config.json").write_text("")
    elif what == "no weights":
        (model / "model.safetensors").unlink()
    return _real_cfg(tmp_path, labels, annotations, videos, model=str(model))


@pytest.mark.parametrize("what, named", [
    ("labels as a dict", "data.labels: file .*labels.json: expected a JSON list"),
    ("annotations as a list", "data.annotations: file .*annotations.json: expected an object"),
    ("a single video as the folder", "data.videos: .*mp4 is a file"),
    ("unreadable videos", "data.videos: .*video"),
    ("an empty config.json", "model.name_or_path: file .*config.json: malformed JSON"),
    ("no weights", "model.name_or_path: .* has no weights"),
])
def test_check_names_inputs_in_the_wrong_format(tmp_path, synth_dir, what, named):
    problems = check(_broken(tmp_path, synth_dir, what))
    assert problems and any(__import__("re").search(named, p) for p in problems), problems


def test_check_exit_code(tmp_path, synth_dir):
    cfg = _broken(tmp_path, synth_dir, "labels as a dict")
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(json.loads(cfg.model_dump_json())))
    bad = subprocess.run([sys.executable, "-m", "cuelab.cli", "run", str(path), "--check"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "data.labels" in bad.stderr + bad.stdout
    ok = _real_cfg(tmp_path, *_real_inputs(tmp_path, synth_dir), model=str(tmp_path / "model"))
    path.write_text(json.dumps(json.loads(ok.model_dump_json())))
    good = subprocess.run([sys.executable, "-m", "cuelab.cli", "run", str(path), "--check"], capture_output=True,
                          text=True)
    assert good.returncode == 0, good.stderr


def test_outputs_made_under_another_fingerprint_are_cleared_before_a_rerun(tmp_path, monkeypatch):
    """A resumable stage (eval appends predictions, train resumes from checkpoints) must not resume from what it
    made under another config: a killed run of the same config resumes, any other rerun starts clean."""
    import dataclasses

    import cuelab.pipeline as pl

    def appending_questions(cfg, paths):  # stands for a resumable stage: it keeps what is already there
        log = paths.questions / "made.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"seed {cfg.questions.seed}\n")
        return {}

    stages = [dataclasses.replace(s, run=appending_questions) if s.name == "questions" else s for s in pl.STAGES]
    monkeypatch.setattr(pl, "STAGES", stages)
    log = tmp_path / "questions" / "made.txt"
    run_pipeline(_cfg(tmp_path), ["data", "questions"])
    assert log.read_text() == "seed 0\n"
    (tmp_path / "stages" / "questions.json").unlink()  # killed before it finished: its started marker remains
    pl.atomic_write_json(tmp_path / "stages" / "questions.started.json",
                         {"fingerprint": pl.fingerprints(_cfg(tmp_path))["questions"]})
    run_pipeline(_cfg(tmp_path), ["data", "questions"])
    assert log.read_text() == "seed 0\nseed 0\n"  # resumed
    run_pipeline(_cfg(tmp_path, "questions.seed=5"), ["data", "questions"])
    assert log.read_text() == "seed 5\n"  # the old outputs were cleared first
    assert not (tmp_path / "stages" / "questions.started.json").exists()
    run_pipeline(_cfg(tmp_path, "questions.seed=5"), ["data", "questions"], force=True)
    assert log.read_text() == "seed 5\n"


def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cuelab.locks import folder_lock\n"
                               f"with folder_lock({str(tmp_path)!r}, 'run'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=str(holder.pid)):
            run_pipeline(_cfg(tmp_path), ["data"])
        assert not (tmp_path / "dataset").exists()
    finally:
        holder.kill()
        holder.wait()
    run_pipeline(_cfg(tmp_path), ["data"])  # the owner is gone: its lock is taken over
    assert (tmp_path / "dataset" / "labels.json").exists()
