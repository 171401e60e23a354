"""The shipped pretrained model is taken only when made with the run's settings and intact."""

import json
from pathlib import Path

import pytest

from cuelab.config import load_config
from cuelab.model.shipped import MANIFEST, check_checkpoint, pretrain_fingerprint, take_checkpoint, write_checkpoint

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _model(tmp_path):
    src = tmp_path / "pretrained"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "config.json").write_text("{}")
    return src


def _data(root: Path) -> list[Path]:
    """A run's labels and training questions (what data_digest covers)."""
    (root / "questions").mkdir(parents=True, exist_ok=True)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    (root / "dataset" / "labels.json").write_text('[{"id": "1", "label": "lifting a cup"}]')
    (root / "questions" / "train.jsonl").write_text('{"qid": "q1", "answer": 2}\n')
    return [root / "dataset" / "labels.json", root / "questions" / "train.jsonl"]


def test_taken_when_the_settings_match_and_refused_otherwise(tmp_path):
    cfg = load_config(DEMO)
    ckpt = write_checkpoint(_model(tmp_path), tmp_path / "ckpt", cfg, _data(tmp_path / "made"),
                            {"accuracy": {"plain": 0.7}})
    manifest = json.loads((ckpt / MANIFEST).read_text())
    assert manifest["fingerprint"] == pretrain_fingerprint(cfg) and set(manifest["files"]) == {"model.safetensors",
                                                                                                 "config.json"}
    dest = tmp_path / "run" / "models" / "pretrained"
    dest.parent.mkdir(parents=True)
    assert take_checkpoint(ckpt, cfg, dest) is None
    assert (dest / "model.safetensors").read_bytes() == b"weights" and not (dest / MANIFEST).exists()

    # settings the weights do not depend on leave it usable
    same = load_config(DEMO, ["pretrain.log_steps=1", "pretrain.num_workers=0", "eval.conditions=[plain]",
                              "pretrain.from_checkpoint=null", "output_dir=elsewhere"])
    assert check_checkpoint(ckpt, same) is None
    # any that they do depend on: refused, naming the section
    for override, section in (("pretrain.max_steps=10", "pretrain"), ("data.synthetic.videos=10", "data"),
                              ("model.tiny.seed=3", "model"), ("frames_train.min_frames=4", "frames_train"),
                              ("render.crf=30", "render")):
        why = check_checkpoint(ckpt, load_config(DEMO, [override]))
        assert why is not None and section in why, (override, why)
        assert take_checkpoint(ckpt, load_config(DEMO, [override]), tmp_path / "nope") is not None
        assert not (tmp_path / "nope").exists()


def test_a_changed_or_missing_file_is_refused(tmp_path):
    cfg = load_config(DEMO)
    ckpt = write_checkpoint(_model(tmp_path), tmp_path / "ckpt", cfg, _data(tmp_path / "made"))
    (ckpt / "model.safetensors").write_bytes(b"other weights")
    assert "model.safetensors" in check_checkpoint(ckpt, cfg)
    assert "no checkpoint.json" in check_checkpoint(tmp_path / "missing", cfg)


def test_the_repository_checkpoint_matches_the_demo_config():
    """checkpoints/demo-pretrained was made by configs/demo.yaml's own pretraining (scripts/demo_checkpoint.py);
    a change to a setting its weights depend on must come with a new checkpoint."""
    assert check_checkpoint(DEMO.parents[1] / "checkpoints" / "demo-pretrained", load_config(DEMO)) is None


def test_pretrain_stage_takes_a_matching_checkpoint_and_trains_otherwise(tmp_path, monkeypatch):
    import cuelab.model.train as train_mod
    from cuelab.pipeline import RunPaths, stage_pretrain

    quick = DEMO.with_name("demo-quick.yaml")
    cfg = load_config(quick, [f"output_dir={tmp_path / 'run'}"])
    data = _data(tmp_path / "run")  # the run's own data, as its data and questions stages wrote it
    ckpt = write_checkpoint(_model(tmp_path), tmp_path / "ckpt", cfg, data)
    trained = []
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: trained.append(1) or {})
    cfg = load_config(quick, [f"output_dir={tmp_path / 'run'}", f"pretrain.from_checkpoint={ckpt}"])
    paths = RunPaths(Path(cfg.output_dir))
    summary = stage_pretrain(cfg, paths)
    assert summary["from_checkpoint"] == str(ckpt) and not trained
    assert (paths.models / "pretrained" / "model.safetensors").read_bytes() == b"weights"
    # other settings: the checkpoint is refused and the stage pretrains
    other = load_config(quick, [f"output_dir={tmp_path / 'run'}", f"pretrain.from_checkpoint={ckpt}",
                                "pretrain.max_steps=3"])
    with pytest.raises(FileNotFoundError):  # the stubbed train wrote no final model to copy
        stage_pretrain(other, paths)
    assert trained == [1]
    # same settings, but the run's questions are not the ones it was trained on (the question builder or the
    # generator changed since): refused too, saying so
    data[1].write_text('{"qid": "q1", "answer": 0}\n')
    assert "other data" in check_checkpoint(ckpt, cfg, data)
    with pytest.raises(FileNotFoundError):
        stage_pretrain(cfg, paths)
    assert trained == [1, 1]


@pytest.mark.slow
def test_make_demo_takes_the_shipped_checkpoint_with_its_own_data(tmp_path):
    """`make demo` (configs/demo.yaml) starts from checkpoints/demo-pretrained only when the run's own labels and
    training questions are the ones it was trained on: the real data and questions stages (about 30 s) must
    make exactly those. When this fails, the generator or the question builder changed: rebuild the checkpoint
    with scripts/demo_checkpoint.py."""
    from cuelab.pipeline import RunPaths, pretrain_data, run_pipeline

    cfg = load_config(DEMO, [f"output_dir={tmp_path / 'demo'}"])
    run_pipeline(cfg, ["data", "questions"])
    data = pretrain_data(cfg, RunPaths(tmp_path / "demo"))
    assert all(f.is_file() for f in data), data
    assert check_checkpoint(cfg.pretrain.from_checkpoint, cfg, data) is None
