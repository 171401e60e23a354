"""A pretrained tiny model shipped in the repository (checkpoints/demo-pretrained/): the demo's own pretraining,
run once with a step budget and fixed torch threads, so the demo can start from it and `--from-scratch` can
redo it bit for bit.

The checkpoint folder holds the model + processor files and `checkpoint.json`: the fingerprint of every config
section its weights depend on, a digest of the data it was trained on, the sha256 of each file, the versions it
was made with and its measured accuracy. A run takes the checkpoint only when the fingerprints agree, the run's
own training data has the same digest (the same config no longer makes the same data once the synthetic
generator or the question builder changes) and the files are intact; otherwise it pretrains.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from cuelab.config import ExperimentConfig
from cuelab.fsutil import atomic_write_json, load_json

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "checkpoint.json"
# what the pretrained weights depend on; logging, checkpointing and encoder threads leave them unchanged
SECTIONS = ("data", "questions", "frames_train", "model", "pretrain")
NO_EFFECT = {"log_steps", "save_steps", "num_workers", "from_checkpoint"}


def pretrain_settings(cfg: ExperimentConfig) -> dict:
    """The config sections the pretrained weights depend on, as plain JSON."""
    out = {}
    for s in SECTIONS:
        out[s] = json.loads(getattr(cfg, s).model_dump_json())
    out["pretrain"] = {k: v for k, v in out["pretrain"].items() if k not in NO_EFFECT}
    out["render"] = {"crf": cfg.render.crf}  # the plain videos are re-encoded at this quality
    return out


def pretrain_fingerprint(cfg: ExperimentConfig) -> str:
    return hashlib.sha256(json.dumps(pretrain_settings(cfg), sort_keys=True).encode()).hexdigest()[:16]


def changed_settings(made: dict, cfg: ExperimentConfig) -> list[str]:
    """The settings that differ between a checkpoint's manifest and `cfg`. A field added to the config after the
    checkpoint was made counts only when set away from its default: a new field's default is, by the rule every
    switch follows, the behaviour the code had before it (so the weights were made with it)."""
    now = pretrain_settings(cfg)
    changed = []
    for section, values in now.items():
        old = made.get(section)
        if not isinstance(old, dict) or not isinstance(values, dict):
            if old != values:
                changed.append(section)
            continue
        fields = _section_fields(cfg, section)
        for key in sorted(set(values) | set(old)):
            if key in old and old[key] == values.get(key, object()):
                continue
            if key not in old and key in fields and _default(fields[key]) == values[key]:
                continue
            changed.append(f"{section}.{key}")
    return changed


def _section_fields(cfg: ExperimentConfig, section: str) -> dict:
    node = getattr(cfg, section, None)
    return type(node).model_fields if node is not None and hasattr(type(node), "model_fields") else {}


def _default(field):
    return json.loads(json.dumps(field.get_default(call_default_factory=True), default=str))


def data_digest(files: list[Path]) -> str:
    """What the weights were trained on: the labels and the training questions, text that the same config and
    code reproduce byte for byte on any machine (the videos' bytes depend on the encoder build, so they are
    left out; pixels follow from the same labels and seeds)."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + (_sha256(Path(f)).encode() if Path(f).is_file() else b"missing"))
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def resolve(path: str | Path) -> Path:
    """A checkpoint path as given, else relative to the repository (configs name it from the repo root)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else ROOT / p


def write_checkpoint(model_dir: str | Path, out_dir: str | Path, cfg: ExperimentConfig, data_files: list[Path],
                     extra: dict | None = None) -> Path:
    """Copy a pretrained model folder to `out_dir` with its checkpoint.json (written last); `data_files`: the
    labels and training questions it was trained on (see data_digest)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    import torch
    import transformers

    manifest = {"fingerprint": pretrain_fingerprint(cfg), "settings": pretrain_settings(cfg),
                "data_digest": data_digest(data_files), "data_files": [Path(f).name for f in data_files],
                "files": {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                **(extra or {})}
    atomic_write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def check_checkpoint(ckpt_dir: str | Path, cfg: ExperimentConfig, data_files: list[Path] | None = None) -> str | None:
    """None when `ckpt_dir` holds an intact checkpoint made with `cfg`'s settings (and, given the run's
    `data_files`, trained on the same data), else why not."""
    ckpt_dir = resolve(ckpt_dir)
    if not (ckpt_dir / MANIFEST).is_file():
        return f"no {MANIFEST} in {ckpt_dir}"
    manifest = load_json(ckpt_dir / MANIFEST)
    if manifest.get("fingerprint") != pretrain_fingerprint(cfg):
        changed = changed_settings(manifest.get("settings", {}), cfg)
        if changed:
            return f"made with other settings (differs in: {', '.join(changed)})"
    if data_files is not None and manifest.get("data_digest") != data_digest(data_files):
        return ("trained on other data than this run's (same settings, but the synthetic generator or the question "
                "builder changed since it was made: rebuild it with scripts/demo_checkpoint.py)")
    for name, digest in manifest.get("files", {}).items():
        if not (ckpt_dir / name).is_file() or _sha256(ckpt_dir / name) != digest:
            return f"{name} is missing or changed"
    return None


def take_checkpoint(ckpt_dir: str | Path, cfg: ExperimentConfig, dest: str | Path,
                    data_files: list[Path] | None = None) -> str | None:
    """Copy the checkpoint's model to `dest` when it matches `cfg` and the run's `data_files` (returns None),
    else return why not (and copy nothing): the caller then pretrains."""
    why = check_checkpoint(ckpt_dir, cfg, data_files)
    if why is not None:
        return why
    src, dest = resolve(ckpt_dir), Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(MANIFEST))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return None
