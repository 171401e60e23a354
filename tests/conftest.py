"""Shared test fixtures: the real-format fixtures folder (skipped when absent), a small synthetic dataset, and
CI's rule: with CUELAB_CI=1 (set by .ci/run) a skipped test fails, naming what was missing. CI is set up to run
every test (fixtures, the vLLM venv, Chromium); a user's plain `make test` skips what their machine lacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("CUELAB_FIXTURES", ROOT.parent / "shared" / "fixtures"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: set by .ci/run: every skip is a failure there
CI = os.environ.get("CUELAB_CI", "") not in ("", "0")


def _fail_skip_in_ci(report) -> None:
    """In CI a skip (fixtures absent, no vLLM venv, no Chromium, ...) becomes a failure with the skip's reason;
    an expected failure (xfail) is left alone."""
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CUELAB_CI=1), where it must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (pytest.importorskip, allow_module_level) counts too."""
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


def fixture_path(*parts: str) -> Path:
    """A path inside ../shared/fixtures; the test is skipped cleanly when it is absent (a failure in CI)."""
    p = FIXTURES.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real-data fixture {p} is absent")
    return p


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset (24 videos, 2-4 objects, annotation gaps), built once per test session."""
    from cuelab.config import SyntheticConfig
    from cuelab.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth")
    generate(SyntheticConfig(videos=24, seed=3, gaps=0.1), out)
    return out


@pytest.fixture(scope="session")
def demo_quick_run(tmp_path_factory) -> Path:
    """The folder of one `cuelab demo --quick` run (about a minute), made once per test session and shared:
    tests read it and write their own outputs elsewhere."""
    out = tmp_path_factory.mktemp("demo-quick") / "run"
    proc = subprocess.run([sys.executable, "-m", "cuelab.cli", "demo", "--quick", "--out", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
