"""`cuelab export RUN_DIR --format FORMAT --out DIR`: a run's test questions under each condition, with their
cued videos, in the form another harness reads: an lmms-eval 0.7 task folder (lmms_eval.py; the model plugin
`--model cuelab` is lmms_model.py), a Hugging Face `datasets` folder (hf.py), or VLMEvalKit's video-MCQ TSVs and
dataset class (vlmevalkit.py). docs/export.md says how to run each.

The folder is written beside DIR under a temp name and moved into place whole, so a killed export leaves no half
folder; an existing DIR is replaced only when an earlier export wrote it (its cuelab_export.json).

Imports stay inside the functions: lmms-eval imports this package (cuelab.export.lmms_entry) whenever it builds
its model registry, whatever model it runs."""

from __future__ import annotations

import shutil
from pathlib import Path


def _writer(fmt: str):
    from cuelab.export import hf, lmms_eval, vlmevalkit

    return {"lmms-eval": lmms_eval.write, "hf": hf.write, "vlmevalkit": vlmevalkit.write}[fmt]


FORMATS = ("lmms-eval", "hf", "vlmevalkit")


def export(run_dir: str | Path, fmt: str, out: str | Path, conditions: list[str] | None = None,
           name: str | None = None) -> dict:
    """Export `run_dir`'s benchmark as `fmt` into `out`; returns the summary also written to out/cuelab_export.json."""
    from cuelab.errors import DataError
    from cuelab.export.source import MARKER, RunBenchmark
    from cuelab.fsutil import atomic_dir, atomic_write_json
    from cuelab.outputs import check_output_dir

    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})", field="--format")
    out = check_output_dir(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DataError(f"exists and holds files that no export wrote (no {MARKER}): choose another --out",
                        file=str(out), field="--out")
    bench = RunBenchmark.load(run_dir, conditions, name)
    final = out.resolve()
    with atomic_dir(final) as tmp:
        summary = _writer(fmt)(bench, tmp, final)
        shutil.copyfile(bench.run_dir / "config.yaml", tmp / "cuelab_config.yaml")
        atomic_write_json(tmp / MARKER, summary)
    return summary
