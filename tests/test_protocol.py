"""`protocol: first-study | cuelab`: one field sets the defaults of named switches, each settable alone."""

from __future__ import annotations

import json

import pytest

from cuelab.config import load_config
from cuelab.protocol import SWITCHES, cuelab_value, protocol_rows, switch_protocol

from tests.conftest import ROOT, fixture_path


def test_every_switch_is_a_departure_and_the_cuelab_value_is_the_default():
    cfg = load_config(None, [])
    for row in protocol_rows(cfg):
        assert row["cuelab"] != row["first_study"], row["switch"]
        assert row["run"] == row["cuelab"] and not row["as_study"]


def test_first_study_sets_every_switch_and_each_can_still_be_set_alone():
    study = load_config(None, ["protocol=first-study"])
    assert all(r["as_study"] for r in protocol_rows(study))
    one_off = load_config(None, ["protocol=first-study", "render.fps=null", "eval.rule=sum"])
    off = {r["switch"] for r in protocol_rows(one_off) if not r["as_study"]}
    assert off == {"render.fps", "eval.rule"}
    assert one_off.questions.builder == "first_study" and one_off.render.even == "crop"


def test_a_config_run_under_the_other_protocol_keeps_its_sizes():
    raw = {"name": "demo", "output_dir": "runs/demo", "questions": {"test_videos": 100, "seed": 3},
           "render": {"cues": ["plain", "box"], "workers": 2}, "eval": {"rule": "sum", "blind": True}}
    out = switch_protocol(raw, "first-study")
    assert out["protocol"] == "first-study" and out["output_dir"] == "runs/demo-first-study"
    assert out["questions"] == {"test_videos": 100, "seed": 3}  # a size, not a protocol rule
    assert out["render"] == {"workers": 2} and out["eval"] == {"blind": True}
    cfg = load_config(ROOT / "configs" / "demo.yaml", [], protocol="first-study")
    assert cfg.render.cues == ["plain", "first_study_listpos"] and cfg.questions.test_videos == 100
    assert cfg.data.synthetic.videos == 1200  # the demo's data


@pytest.mark.parametrize("name", ["first-study-2b", "first-study-4b"])
def test_the_first_study_configs_follow_the_study_on_every_switch(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert [r["switch"] for r in protocol_rows(cfg) if not r["as_study"]] == []
    assert [str(p) for p in cfg.data.labels] == ["data/ssv2/labels/train.json", "data/ssv2/labels/validation.json"]
    assert (cfg.train.rank, cfg.train.alpha, cfg.train.lr, cfg.train.batch_size, cfg.train.grad_accum) == \
        (64, 64, 1e-4, 8, 4)


def test_the_shipped_checkpoint_ignores_new_fields_at_their_default_only():
    from cuelab.model.shipped import check_checkpoint

    demo = ROOT / "configs" / "demo.yaml"
    assert check_checkpoint("checkpoints/demo-pretrained", load_config(demo)) is None
    why = check_checkpoint("checkpoints/demo-pretrained", load_config(demo, ["model.prompt=first_study"]))
    assert why and "model.prompt" in why


def test_cuelab_questions_protocol_first_study_on_the_real_labels(tmp_path):
    labels = fixture_path("ssv2", "base_validation_set.json")
    from typer.testing import CliRunner

    from cuelab.cli import app

    res = CliRunner().invoke(app, ["questions", "--labels", str(labels), "--out", str(tmp_path),
                                   "--protocol", "first-study", "--seed", "0"])
    assert res.exit_code == 0, res.output
    test = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert len(test) == 2415 and {q["kind"] for q in test} == {"object", "verb"}
    assert all(q["question"] == q["question"].lower() and not q["question"].endswith(".") for q in test)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["protocol"] == "first-study" and manifest["videos"]["test"] == 1000


def test_render_settings_carry_the_run_seed_to_the_study_cue():
    from cuelab.config import RenderConfig
    from cuelab.tracks import VideoTracks
    from cuelab.video.settings import RenderSettings

    tracks = VideoTracks("7", {str(i): {0: (1.0, 1.0, 9.0, 9.0)} for i in range(4)})
    colours = {s: RenderSettings.from_config(RenderConfig(), s).cue("first_study").colors(tracks) for s in range(8)}
    assert len({tuple(c.values()) for c in colours.values()}) > 1
    assert RenderSettings.from_config(RenderConfig(), 3).cue("first_study").colors(tracks) == colours[3]
    assert cuelab_value("render.even") == "pad" and len(SWITCHES) >= 10
