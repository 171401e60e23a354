"""The typed config: YAML + overrides, clear errors, and every shipped YAML validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from cuelab.config import ExperimentConfig, load_config
from cuelab.errors import DataError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_follow_the_first_study():
    cfg = ExperimentConfig()
    t = cfg.train
    assert (t.rank, t.alpha, t.lr, t.schedule, t.warmup_ratio, t.epochs) == (64, 64, 1e-4, "cosine", 0.03, 1.0)
    assert t.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"] and not t.lora_on_vision


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntrain:\n  lr: 2.0e-4\n")
    cfg = load_config(p, ["train.rank=8", "render.cues=[plain,box]"])
    assert cfg.name == "x" and cfg.train.lr == 2e-4 and cfg.train.rank == 8 and cfg.render.cues == ["plain", "box"]
    assert cfg.stage_hash("train") != load_config(p).stage_hash("train")


def test_unknown_field_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  rnak: 8\n")
    with pytest.raises(DataError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "rnak" in str(e.value)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.output_dir
    assert path.read_text().startswith("#"), "each config's header comment gives the command that runs it"
