"""The pipeline runner: stages skipped when their fingerprint matches, redone when the config changes."""

from __future__ import annotations

from cuelab.config import load_config
from cuelab.pipeline import fingerprints, run_pipeline


def test_stage_skipped_when_done_and_redone_when_config_changes(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "data.synthetic.videos=3", "model.tiny={}"])
    first = run_pipeline(cfg, ["data"])
    assert (tmp_path / "dataset" / "labels.json").exists() and "seconds" in first["data"]
    mtime = (tmp_path / "dataset" / "labels.json").stat().st_mtime_ns
    run_pipeline(cfg, ["data"])
    assert (tmp_path / "dataset" / "labels.json").stat().st_mtime_ns == mtime  # skipped
    cfg2 = load_config(None, [f"output_dir={tmp_path}", "data.synthetic.videos=4", "model.tiny={}"])
    assert fingerprints(cfg2)["data"] != fingerprints(cfg)["data"]
    run_pipeline(cfg2, ["data"])
    assert len(list((tmp_path / "dataset" / "videos").glob("*.mp4"))) == 4


def test_check_names_missing_real_inputs(tmp_path):
    from cuelab.pipeline import check

    cfg = load_config(None, ["data.source=ssv2", f"data.labels={tmp_path}/nope.json",
                             "model.name_or_path=Qwen/Qwen3-VL-2B-Instruct"])
    missing = "\n".join(check(cfg))
    assert "nope.json does not exist" in missing and "data.annotations: not set" in missing
    assert "Qwen/Qwen3-VL-2B-Instruct" in missing
