#!/usr/bin/env bash
# Create .venv-lmms/: lmms-eval 0.7 in its own venv, for the lmms-eval export's tests and for running an exported
# task with cuelab's model plugin. Idempotent: a finished venv is kept.
#
# The venv is layered on the main one: a .pth file adds .venv's site-packages (torch, transformers, cuelab and
# its `lmms_eval.models` entry point) after its own, so lmms-eval and what it pulls in live here while the 5 GB
# torch build is not installed twice; a version lmms-eval needs (e.g. av<16) is installed here and shadows the
# main venv's. Exits 0 with a message where lmms-eval cannot be installed: the tests then skip (fail in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${LMMS_VENV:-.venv-lmms}
MAIN=${MAIN_VENV:-.venv}
PY=$VENV/bin/python
STAMP=$VENV/.cuelab-ready
SPEC="lmms-eval==0.7.3"
# lmms-eval 0.7.3's evaluator imports filelock._api, which filelock 4 no longer has (ModuleNotFoundError at the
# start of every evaluation): filelock 3 in this venv, shadowing the main venv's
PINS="filelock<4"
CHECK="import filelock._api, lmms_eval.evaluator, datasets, cuelab.export.lmms_model
from lmms_eval.models import get_model; get_model('cuelab')"

if [ ! -x "$MAIN/bin/python" ]; then
  echo "setup_lmms: $MAIN is missing (make venv first); skipping (lmms-eval tests will skip)"; exit 0
fi
if [ -f "$STAMP" ] && "$PY" -c "$CHECK" >/dev/null 2>&1; then
  echo "setup_lmms: $VENV ready"; exit 0
fi
# the same interpreter as the main venv (a venv made from a venv's python takes its base interpreter)
test -x "$PY" || "$MAIN/bin/python" -m venv "$VENV" || { echo "setup_lmms: cannot create $VENV; skipping"; exit 0; }
MAIN_SITE=$("$MAIN/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
MAIN_SITE=$(cd "$MAIN_SITE" && pwd)
# addsitedir (not a bare path line) so the main venv's own .pth files run too: cuelab's editable install is one
echo "import site; site.addsitedir('$MAIN_SITE')" > "$SITE/_cuelab_main_venv.pth"

"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$PY" -m pip install -q "$SPEC" "$PINS" 2>&1 | grep -v -E "outside environment|No files were found to uninstall|is ignored: it is neither a file nor|^\s*$"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  echo "setup_lmms: $SPEC ($PINS) could not be installed here; skipping (lmms-eval tests will skip)"
  rm -rf "$VENV"; exit 0
fi
if "$PY" -c "$CHECK" >/dev/null 2>&1; then
  VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("lmms-eval"))')
  touch "$STAMP"; echo "setup_lmms: $VENV ready ($VERSION)"
else
  echo "setup_lmms: lmms-eval installed but the cuelab model does not load; skipping (lmms-eval tests will skip)"
  "$PY" -c "$CHECK" 2>&1 | tail -5
fi
exit 0
