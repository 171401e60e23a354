"""A config with `models:` runs several models on the same data (cuelab.pipeline.run_models): the shared stages
(data, questions, render) once, each model's stages in OUTPUT/models/<name>/ reading the shared videos through
its link, a failing model reported while the others complete, and OUTPUT/report/models.md across all of them.
Also the entries' validation (names, merged model sections) and the staleness of every model after a shared
change. The end-to-end run is configs/demo-models.yaml made smaller (no pretraining, two training steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cuelab.config import load_config
from cuelab.errors import DataError
from cuelab.pipeline import SHARED_STAGES, fingerprints, run_pipeline
from cuelab.run_layout import RunPaths

ROOT = Path(__file__).resolve().parents[1]
GOOD = ("qwen3-vl-tiny", "smolvlm-tiny")
BROKEN = "missing-ckpt"
CONDITIONS = ("plain", "box", "trajectory", "wrong_object", "blind")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cuelab.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=900)


def _small_config(tmp: Path) -> Path:
    """configs/demo-models.yaml, smaller, with a third model (between the two) whose checkpoint is missing."""
    raw = yaml.safe_load((ROOT / "configs" / "demo-models.yaml").read_text())
    assert [m["name"] for m in raw["models"]] == list(GOOD)
    raw["output_dir"] = str(tmp / "run")
    raw["data"]["synthetic"]["videos"] = 24
    raw["questions"]["test_videos"] = 4
    raw["pretrain"] = None  # "pretrained": the tiny model as built (the orchestration is tested, not learning)
    raw["train"]["max_steps"] = 2
    raw["attention"]["enabled"] = False  # measured per family in test_families_e2e
    raw["models"].insert(1, {"name": BROKEN, "model": {"tiny": None, "name_or_path": str(tmp / "no-such-ckpt")}})
    path = tmp / "models.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One `cuelab run` of the small multi-model config, shared by the tests below (they only read it)."""
    config = _small_config(tmp_path_factory.mktemp("multi"))
    return config, _cli("run", str(config))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_shared_stages_once_then_one_folder_per_model(multi_run):
    config, proc = multi_run
    log = proc.stdout + proc.stderr
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    assert proc.returncode == 1, log[-3000:]  # a model failed: reported, and the run says so
    assert "1 of 3 models failed" in log and f"model {BROKEN} failed at stage train" in log
    assert "model 3/3: smolvlm-tiny" in log  # the model after the failing one still ran
    # the shared stages ran once, in the run folder; no model folder holds data, questions or videos
    assert sorted(p.stem for p in (out / "stages").glob("*.json")) == sorted(SHARED_STAGES)
    for name in GOOD:
        folder = out / "models" / name
        assert not any((folder / d).exists() for d in ("dataset", "questions", "videos"))
        assert {p.stem for p in (folder / "stages").glob("*.json")} == {"model", "pretrain", "train", "eval",
                                                                       "attention", "report"}
        assert list((folder / "predictions").glob("*.jsonl")) and (folder / "report" / "report.md").is_file()
        results = json.loads((folder / "results.json").read_text())
        assert results["failed"] == 0
        # its stages' fingerprints hold the shared stages' chains: a change there reaches this model
        upstream = json.loads((folder / "stages" / "eval.json").read_text())["parts"]["upstream"]
        for stage in ("questions", "render"):
            assert upstream[stage] == json.loads((out / "stages" / f"{stage}.json").read_text())["parts"]["chain"]
    tiny = {n: json.loads((out / "models" / n / "models" / "tiny-init" / "config.json").read_text())["model_type"]
            for n in GOOD}
    assert tiny["qwen3-vl-tiny"] != tiny["smolvlm-tiny"]  # two families, built from one merged model section
    failed = json.loads((out / "models" / BROKEN / "failed.json").read_text())
    assert failed["stage"] == "train" and "no-such-ckpt" in failed["error"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cross_model_report_names_every_model_and_condition(multi_run):
    config, _ = multi_run
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    md = (out / "report" / "models.md").read_text()
    assert (out / "report" / "models.html").is_file()
    assert (out / "report" / "figures" / "models_cue_effect.png").is_file()
    assert f"`{BROKEN}`: not in the table, **failed at stage train**" in md
    table = [line.split("|")[1:-1] for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    rows = {(c[0].strip(), c[3].strip(), c[4].strip()) for c in table[1:]}
    for name in GOOD:
        for model in ("pretrained", "finetuned"):
            assert {(name, model, cond) for cond in CONDITIONS} <= rows
    assert not any(r[0] == BROKEN for r in rows)
    assert "Every run asks the same" in md  # one set of questions for every model


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rerun_resumes_and_a_shared_change_makes_every_model_stale(multi_run):
    config, _ = multi_run
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    marker = out / "models" / GOOD[0] / "stages" / "train.json"
    before = marker.read_text()
    proc = _cli("run", str(config))  # done models are skipped stage by stage; the broken one fails again
    assert proc.returncode == 1 and marker.read_text() == before, (proc.stdout + proc.stderr)[-3000:]
    assert "stage eval (" not in proc.stderr  # no eval stage rerun, shared or per model
    cfg = load_config(config)
    changed = load_config(config, ["questions.seed=1"])
    for entry, other in zip(cfg.models, changed.models):
        if entry.name == BROKEN:
            continue
        folder = out / "models" / entry.name
        now = fingerprints(cfg.for_model(entry, folder), RunPaths(folder))
        assert now["eval"] == json.loads((folder / "stages" / "eval.json").read_text())["fingerprint"]
        then = fingerprints(changed.for_model(other, folder), RunPaths(folder))
        assert all(then[s] != now[s] for s in ("model", "train", "eval", "attention", "report"))
    # a model folder runs its model's stages only: the shared ones belong to the multi-model config
    with pytest.raises(DataError, match="multi-model run"):
        run_pipeline(cfg.for_model(cfg.models[0], out / "models" / GOOD[0]), ["render"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_command_rewrites_the_cross_model_report(multi_run):
    config, _ = multi_run
    out = Path(yaml.safe_load(config.read_text())["output_dir"])
    (out / "report" / "models.md").unlink()
    proc = _cli("report", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "qwen3-vl-tiny" in (out / "report" / "models.md").read_text()


# --- validation of the entries -------------------------------------------------------------------------------

@pytest.mark.parametrize("models, field, message", [
    ("[{name: a}, {name: a}]", "models", "models.1.name: 'a' is already the name of models.0"),
    ("[{name: qwen}, {name: Qwen}]", "models", "already the name of models.0"),  # one folder on macOS
    ("[{name: ../up}]", "models.0.name", "path separator"),
    ("[{name: a b/c}]", "models.0.name", "path separator"),
    ("[{name: .hidden}]", "models.0.name", "starts with a dot"),
    ("[{name: a__b}]", "models.0.name", "'__'"),
    ("[{name: finetune}]", "models.0.name", "reserved"),
    ("[{model: {}}]", "models.0.name", "Field required"),
    ("[{name: a}, {name: b, model: {family: nope}}]", "models.1.model.family", "unknown model family 'nope'"),
    ("[{name: a, model: {dtype: float8}}]", "models.0.model.dtype", "float32"),
    ("[{name: a, model: {tiny: {num_key_value_heads: 3}}}]", "models.0.model.tiny", "multiple of"),
    ("[{name: a, pretrain: {max_steps: 1}}]", "models.0.pretrain", "unknown field"),
    ("[{name: a, train: {conditions: {plain: 1.0}}}]", "models", "models.0.train.conditions: the rendered videos"),
    ("[{name: a, eval: {conditions: [plain]}}]", "models", "models.0.eval.conditions"),
])
def test_invalid_entries_name_their_field(models, field, message):
    with pytest.raises(DataError) as e:
        load_config(ROOT / "configs" / "demo-models.yaml", [f"models={models}"])
    assert e.value.field == field and message in str(e.value)


def test_an_entry_is_merged_over_the_top_level_sections():
    cfg = load_config(ROOT / "configs" / "demo-models.yaml", [
        "models=[{name: a, model: {family: smolvlm, tiny: {hidden_size: 32}}, train: {lr: 0.5}, "
        "eval: {sampling: {top_k: 3}}}, {name: b}]"])
    a, b = cfg.models
    assert a.model.family == "smolvlm" and a.model.tiny.hidden_size == 32
    assert a.model.tiny.vocab_size == cfg.model.tiny.vocab_size and a.model.dtype == "float32"  # the rest kept
    assert a.train.lr == 0.5 and a.train.rank == cfg.train.rank and a.eval.sampling.top_k == 3
    assert a.eval.sampling.top_p == cfg.eval.sampling.top_p and b.train is None and b.model == cfg.model
    one = cfg.for_model(a, Path("elsewhere"))
    assert (one.name, one.models, one.train.lr, one.eval.sampling.top_k) == ("a", [], 0.5, 3)
    assert one.data == cfg.data and one.render == cfg.render and one.attention == cfg.attention
    # a model's single-run config fingerprints as a standalone config of the same sections would
    alone = load_config(ROOT / "configs" / "demo-models.yaml", ["models=[]", "model.family=smolvlm",
                                                                "model.tiny.hidden_size=32", "train.lr=0.5",
                                                                "eval.sampling.top_k=3"])
    assert one.stage_hash("model", "train", "eval") == alone.stage_hash("model", "train", "eval")


def test_without_models_the_config_dump_is_unchanged():
    from cuelab.config import jsonable

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert cfg.models == [] and "models" not in jsonable(cfg)
    paths = RunPaths(Path("runs/demo"))
    assert paths.shared is None and paths.videos == Path("runs/demo/videos")
    assert paths.marker("render") == paths.marker("eval").with_name("render.json") == paths.stages / "render.json"
