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


# Each value below was accepted before the schema checked values, and each did harm: negative frame counts trained
# on 2 frames, max_steps=-3 trained 1 step, batch_size=0 ended in ZeroDivisionError, the rest fail late or silently.
BAD = [
    ("frames_train.min_frames=-2", "frames_train.min_frames"),
    ("frames_eval.max_frames=0", "frames_eval.max_frames"),
    ("frames_train.min_frames=9", "frames_train"),  # demo: max_frames 8
    ("frames_train.fps=0", "frames_train.fps"),
    ("frames_train.total_pixels=0", "frames_train.total_pixels"),
    ("frames_train.max_pixels_per_frame=-1", "frames_train.max_pixels_per_frame"),
    ("frames_train.min_pixels_per_frame=100000", "frames_train"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.grad_accum=0", "train.grad_accum"),
    ("train.max_steps=-3", "train.max_steps"),
    ("train.max_seconds=0", "train.max_seconds"),
    ("train.epochs=0", "train.epochs"),
    ("train.lr=0", "train.lr"),
    ("train.lr=abc", "train.lr"),
    ("train.vision_lr=-1e-4", "train.vision_lr"),
    ("train.rank=0", "train.rank"),
    ("train.alpha=0", "train.alpha"),
    ("train.dropout=1.5", "train.dropout"),
    ("train.warmup_ratio=-0.1", "train.warmup_ratio"),
    ("train.weight_decay=-0.01", "train.weight_decay"),
    ("train.max_grad_norm=0", "train.max_grad_norm"),
    ("train.betas=[0.9,1.0]", "train.betas"),
    ("train.save_steps=0", "train.save_steps"),
    ("train.log_steps=0", "train.log_steps"),
    ("train.num_workers=-1", "train.num_workers"),
    ("train.threads=0", "train.threads"),
    ("train.conditions={plain: -1}", "train.conditions"),
    ("train.conditions={plain: 0, box: 0}", "train"),
    ("train.phases=[{fraction: 0}]", "train.phases"),
    ("train.phases=[]", "train.phases"),
    ("pretrain.max_steps=0", "pretrain.max_steps"),
    ("render.workers=0", "render.workers"),
    ("render.crf=52", "render.crf"),
    ("data.synthetic.videos=0", "data.synthetic.videos"),
    ("data.synthetic.width=0", "data.synthetic.width"),
    ("data.synthetic.gaps=1.2", "data.synthetic.gaps"),
    ("data.synthetic.single_object_fraction=-0.5", "data.synthetic.single_object_fraction"),
    ("data.synthetic.min_objects=4", "data.synthetic"),  # demo: max_objects 3
    ("data.synthetic.min_seconds=5", "data.synthetic"),
    ("questions.test_videos=0", "questions.test_videos"),
    ("questions.videos=0", "questions.videos"),
    ("questions.videos=50", "questions"),  # demo: test_videos 100 of 50 leaves no training video
    ("eval.videos_per_call=0", "eval.videos_per_call"),
    ("attention.n=0", "attention.n"),
    ("attention.overlays=-1", "attention.overlays"),
    ("attention.sink_tokens=-1", "attention.sink_tokens"),
    ("attention.cue_threshold=256", "attention.cue_threshold"),
    ("attention.max_box_gap=-1", "attention.max_box_gap"),
    ("report.previews=-1", "report.previews"),
    ("model.tiny.hidden_size=0", "model.tiny.hidden_size"),
    ("model.tiny.num_key_value_heads=3", "model.tiny"),  # 4 heads cannot share 3 key/value heads
    ("model.tiny.vision_num_heads=3", "model.tiny"),  # 64 is not a multiple of 3
    ("model.tiny.head_dim=16", "model.tiny"),  # mrope_section sums to 16 = 32 / 2
    ("model.tiny.deepstack_visual_indexes=[1]", "model.tiny"),  # one vision block: index 0 only
]


@pytest.mark.parametrize("override,field", BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_refused_naming_the_field(override, field):
    demo = CONFIGS[[p.name for p in CONFIGS].index("demo.yaml")]
    with pytest.raises(DataError) as e:
        load_config(demo, [override])
    msg = str(e.value)
    assert f"field {field!r}" in msg or f"{field}." in msg, msg
    assert str(demo) in msg and "\n" not in msg


GOOD = ["train.max_steps=null", "train.num_workers=0", "train.dropout=0", "train.betas=[0, 0.5]",
        "frames_train.total_pixels=null", "frames_train.min_frames=1", "render.crf=0", "render.crf=51",
        "attention.overlays=0", "report.previews=0", "train.conditions={plain: 0, box: 1}",
        "data.synthetic.min_objects=3", "questions.videos=101", "model.tiny.head_dim=32",
        "train.phases=[{fraction: 0.5}, {fraction: 0.5}]"]


@pytest.mark.parametrize("override", GOOD)
def test_edge_values_that_make_sense_are_accepted(override):
    demo = CONFIGS[[p.name for p in CONFIGS].index("demo.yaml")]
    load_config(demo, [override])


def test_a_malformed_override_names_the_override():
    with pytest.raises(DataError) as e:
        load_config(None, ["render.cues=[plain,box"])
    assert "render.cues" in str(e.value) and "not valid YAML" in str(e.value)


def test_a_non_utf8_config_is_a_data_error_naming_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(DataError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "UTF-8" in str(e.value)


@pytest.mark.parametrize("override", ["eval.conditions=[plain,../..]", "render.cues=[plain,bx]",
                                      "train.conditions={plain: 1, ../x: 1}", "attention.conditions=[spotlite]"])
def test_conditions_name_known_cues(override):
    """A condition names the videos/<cue>/ folder every later stage reads: an unknown one is refused up front."""
    with pytest.raises(DataError, match="unknown cue"):
        load_config(None, [override])


def test_overrides_reach_an_entry_of_a_list():
    """`--set models.1.model.family=...` changes that entry only; a missing entry or a word index is refused."""
    from cuelab.config import apply_overrides

    raw = {"models": [{"name": "a", "model": {}}, {"name": "b", "model": {"family": "qwen3_vl"}}]}
    out = apply_overrides(raw, ["models.1.model.family=internvl", "models.0.name=first"])
    assert out["models"] == [{"name": "first", "model": {}}, {"name": "b", "model": {"family": "internvl"}}]
    for bad in ("models.2.name=x", "models.one.name=x"):
        with pytest.raises(DataError, match="not an entry of the list"):
            apply_overrides(raw, [bad])
    with pytest.raises(DataError, match="not a section"):
        apply_overrides({"seed": 3}, ["seed.x=1"])
