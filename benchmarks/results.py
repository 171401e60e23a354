"""Append a benchmark's table to benchmarks/RESULTS.md with the date, the machine and the command."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """The card (when CUDA is there) or the CPU, in words."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}"
    except Exception:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores"


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def append_results(title: str, table: str, notes: str = "", path: Path | None = None) -> None:
    path = path or Path(os.environ.get("CUELAB_RESULTS", RESULTS))
    cmd = " ".join([Path(sys.argv[0]).name if sys.argv else "python"] + sys.argv[1:])
    block = (f"\n## {title}\n\n- date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
             f"- machine: {machine()}\n- command: `python benchmarks/{cmd}`\n\n{table}\n")
    if notes:
        block += f"\n{notes}\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(block)
    print(block)
