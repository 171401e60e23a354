"""report.md + report.html from a run folder: dataset and question statistics, previews, results in the first
study's two-table form with CIs, paired tests and the blind baseline, charts, per-verb accuracy, attention
curves and overlays, and the config and versions that produced them. Sections whose inputs are absent are
left out and named, never invented."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from cuelab.fsutil import atomic_write_text, load_json, read_jsonl
from cuelab.report.html import markdown_to_html

KIND_ORDER = ["all", "object", "verb", "referential"]


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("cuelab", "torch", "transformers", "peft", "accelerate", "av", "opencv-python-headless", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:
        pass
    return out


def _fmt_pct(x) -> str:
    return "" if x is None or pd.isna(x) else f"{100 * x:.1f}"


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        import os

        return os.path.relpath(path.resolve(), base.resolve())
