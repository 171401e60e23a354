"""Shared test fixtures: the real-format fixtures folder (skipped when absent) and a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("CUELAB_FIXTURES", ROOT.parent / "shared" / "fixtures"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def fixture_path(*parts: str) -> Path:
    """A path inside ../shared/fixtures; the test is skipped cleanly when it is absent."""
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
