"""Bad input at the command line ends in one line naming the file or field and exit code 1 or 2, never a
traceback; real bugs keep theirs. Every case fails before any model work, so the whole file runs in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cuelab.cli import app
from cuelab.data.skipped import skipped_summary

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "demo-quick.yaml")
runner = CliRunner()


def fails_in_one_line(args: list[str], *names: str) -> str:
    """Run the CLI; it must exit 1 or 2 through its own error path with one stderr line naming `names`."""
    r = runner.invoke(app, [str(a) for a in args])
    assert isinstance(r.exception, SystemExit), f"unhandled {r.exception!r}\n{r.output}"
    assert r.exit_code in (1, 2), r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for name in names:
        assert name in lines[0], lines[0]
    assert "Traceback" not in r.output
    return lines[0]


@pytest.fixture
def not_utf8(tmp_path) -> Path:
    p = tmp_path / "latin1.json"
    p.write_bytes('[{"id": "1", "label": "caf\u00e9"}]'.encode("latin-1"))
    return p


# --- files that are not UTF-8 --------------------------------------------------------------------------------

def test_labels_not_utf8(tmp_path, not_utf8):
    line = fails_in_one_line(["questions", "--labels", not_utf8, "--out", tmp_path / "q"], str(not_utf8), "UTF-8")
    assert "0xe9" in line  # the offending byte, so the user can find it


def test_annotations_not_utf8(tmp_path, not_utf8):
    fails_in_one_line(["inspect", "--annotations", not_utf8], str(not_utf8), "UTF-8")
    fails_in_one_line(["render", "--videos", tmp_path, "--annotations", not_utf8, "--out", tmp_path / "r",
                       "--cues", "plain"], str(not_utf8), "UTF-8")


def test_config_yaml_not_utf8(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    fails_in_one_line(["run", p, "--check"], str(p), "UTF-8")


# --- output folders ------------------------------------------------------------------------------------------

def test_out_is_an_existing_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    fails_in_one_line(["synth", "--out", f, "--videos", "1"], str(f), "--out", "existing file")
    fails_in_one_line(["demo", "--quick", "--out", f], str(f), "existing file")
    preds = tmp_path / "preds"
    preds.mkdir()
    fails_in_one_line(["results", "--predictions", preds, "--out", f], str(f), "existing file")
    assert f.read_text() == "x"


def test_out_under_a_file_cannot_be_created(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    fails_in_one_line(["synth", "--out", f / "sub", "--videos", "1"], str(f / "sub"), "is a file")
    fails_in_one_line(["run", QUICK, "--set", f"output_dir={f / 'sub'}"], "output_dir", "is a file")
    fails_in_one_line(["train", QUICK, "--out", f / "sub"], str(f / "sub"), "is a file")


def _writable(folder: Path) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


@pytest.fixture
def refusing_folder(tmp_path):
    """A folder that refuses new files: chmod 0o500 for a user; for root, whom chmod and os.access let through,
    /sys (a kernel file system that refuses new files even to root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not _writable(ro):
            yield ro
        elif Path("/sys").is_dir() and not _writable(Path("/sys")):
            yield Path("/sys")
        else:
            pytest.skip("no folder here refuses writes")
    finally:
        ro.chmod(0o700)


def test_out_in_a_folder_that_refuses_writes(refusing_folder):
    out = refusing_folder / "cuelab-out"
    fails_in_one_line(["synth", "--out", out, "--videos", "1"], str(out), "cannot be written")
    fails_in_one_line(["demo", "--quick", "--set", f"output_dir={out}"], "output_dir", str(out))
    fails_in_one_line(["eval", "--model", "m", "--questions", "q.jsonl", "--conditions", "blind", "--out", out],
                      str(out), "cannot be written")
    assert not out.exists()


def test_check_names_an_output_dir_it_cannot_write(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = runner.invoke(app, ["run", QUICK, "--check", "--set", f"output_dir={f}"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert any("output_dir" in ln and str(f) in ln for ln in r.stderr.splitlines()), r.stderr


# --- config values and overrides -----------------------------------------------------------------------------

def test_malformed_set_list():
    fails_in_one_line(["run", QUICK, "--check", "--set", "render.cues=[plain,box"], "render.cues", "not valid YAML")
    fails_in_one_line(["demo", "--quick", "--set", "render.cues=[plain,box"], "render.cues")


def test_demo_catches_a_bad_value_as_run_does():
    fails_in_one_line(["demo", "--set", "train.lr=abc"], "train.lr", "abc")
    fails_in_one_line(["run", QUICK, "--check", "--set", "train.lr=abc"], "train.lr", "abc")


def test_bad_values_stop_before_any_work(tmp_path):
    fails_in_one_line(["run", QUICK, "--check", "--set", "frames_train.min_frames=-2"], "frames_train.min_frames")
    fails_in_one_line(["train", QUICK, "--set", "train.batch_size=0", "--set", f"output_dir={tmp_path}"],
                      "train.batch_size")
    fails_in_one_line(["synth", "--out", tmp_path / "s", "--videos", "0"], "videos")
    assert not (tmp_path / "s").exists()


def test_a_real_process_prints_no_traceback(tmp_path):
    """CliRunner catches exceptions itself; the installed entry point must not print one either."""
    p = subprocess.run([sys.executable, "-m", "cuelab.cli", "demo", "--set", "train.lr=abc"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "train.lr" in p.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only bad input is turned into a message: an unexpected error still surfaces as itself."""
    import cuelab.data.inspect

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(cuelab.data.inspect, "inspect_dataset", broken)
    r = runner.invoke(app, ["inspect"])
    assert isinstance(r.exception, KeyError)


# --- what `cuelab questions` skipped -------------------------------------------------------------------------

def _label(i: int, template: str, objects: list[str]) -> dict:
    label = template
    for o in objects:
        label = label.replace("[something]", o, 1)
    return {"id": str(i), "label": label.lower(), "template": template, "placeholders": objects}


def test_questions_prints_what_it_skipped(tmp_path):
    objects = ["pen", "cup", "phone", "book", "spoon", "coin", "remote", "bottle", "key", "wallet", "shoe", "box"]
    templates = ["Pushing [something] from left to right", "Pulling [something] from left to right",
                 "Moving [something] from left to right", "Putting [something] into [something]"]
    good = [_label(1000 + i, templates[i % 4], [objects[(i * 7 + j * 5) % 12] for j in range(1 + (i % 4 == 3))])
            for i in range(40)]
    bad = [{"id": "2001", "label": "x", "template": "y", "placeholders": "not a list"},
           {"id": "2002", "label": "x", "template": "z", "placeholders": 3},
           {"label": "no id"}, good[0]]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(good + bad))
    r = runner.invoke(app, ["questions", "--labels", labels, "--out", tmp_path / "q", "--test-videos", "4",
                            "--kinds", "object"])
    assert r.exit_code == 0, r.output
    err = r.stderr
    assert f"{labels}: 3 malformed label entries skipped" in err
    assert "2 x placeholders: ids 2001, 2002" in err and "1 x id:" in err
    assert "videos left out: 1 duplicate_id" in err


def test_skipped_summary_counts_every_reason_and_says_when_ids_are_cut():
    records = [{"file": "a.json", "video_id": str(i), "field": "labels", "reason": "frame 1 has no 'labels' list"}
               for i in range(50)]
    manifest = {"inputs": {"labels": "l.json", "label_errors": 0, "annotations": "a.json",
                           "annotation_errors": 70, "errors": records},
                "dropped": {"videos": {"no_boxes": 3, "noisy_placeholder": 5, "duplicate_id": 0},
                            "placeholders": {"too_long": 6}}}
    lines = skipped_summary(manifest)
    assert lines[0].startswith("a.json: 70 videos with malformed annotations skipped (the first 50")
    assert lines[1].startswith("  50 x labels: ids 0, 1, 2, 3, 4, ...;")
    assert lines[2] == "videos left out: 5 noisy_placeholder, 3 no_boxes (noisy placeholders: 6 too_long)"
    assert skipped_summary({"inputs": {"label_errors": 0}, "dropped": {"videos": {}}}) == []
