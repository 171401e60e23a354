"""CI never stays green on skipped tests: with CUELAB_CI=1 (what .ci/run sets) a skip is a failure naming what
was missing; without it the same tests skip cleanly, as on a user's machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SKIPPING = '''
import pytest
from conftest import fixture_path

def test_needs_a_fixture():
    fixture_path("no-such-fixture-folder")

@pytest.fixture(scope="module")
def browser():
    pytest.skip("chromium is not installed")

def test_needs_a_browser(browser):
    pass

@pytest.mark.xfail(reason="a known bug")
def test_expected_failure():
    assert False

def test_runs():
    pass
'''


def _pytest(folder: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CUELAB_CI"}
    if ci:
        env["CUELAB_CI"] = "1"
    # the suite's own conftest.py, copied next to the test file: its hooks and fixture_path as they are
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def _suite(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (folder / "test_skipping.py").write_text(source)
    (folder / "pytest.ini").write_text("[pytest]\n")  # not the project's settings: this folder is its own root
    return folder


def test_skips_fail_in_ci_and_skip_cleanly_elsewhere(tmp_path):
    folder = _suite(tmp_path, SKIPPING)
    user = _pytest(folder, ci=False)
    assert user.returncode == 0, user.stdout + user.stderr
    assert "2 skipped" in user.stdout and "1 xfailed" in user.stdout and "1 passed" in user.stdout
    assert "no-such-fixture-folder" in user.stdout  # the skip summary says why

    ci = _pytest(folder, ci=True)
    assert ci.returncode == 1, ci.stdout + ci.stderr
    last = ci.stdout.splitlines()[-1]  # a skip in a test fails it, one in a fixture is an error in its setup
    assert "skipped" not in last and "1 failed" in last and "1 error" in last and "1 xfailed" in last, last
    assert "where it must run" in ci.stdout
    assert "no-such-fixture-folder" in ci.stdout and "chromium is not installed" in ci.stdout


def test_a_module_skipped_at_import_fails_in_ci(tmp_path):
    folder = _suite(tmp_path, 'import pytest\npytest.importorskip("no_such_module_cuelab")\n')
    (folder / "test_other.py").write_text("def test_runs():\n    pass\n")
    assert _pytest(folder, ci=False).returncode == 0
    ci = _pytest(folder, ci=True)
    assert ci.returncode != 0 and "no_such_module_cuelab" in ci.stdout, ci.stdout
