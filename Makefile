# kimi-mini: every target sets itself up (a .venv with the pinned requirements), then does its job.
# A second run installs nothing: the venv is rebuilt only when requirements.txt or pyproject.toml change.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= toy
# The CPU build of torch lies on disk on the course machines; use it when it is there.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := --disable-pip-version-check $(if $(WHEELS),--find-links $(WHEELS))
# pytest workers: the notebook cases dominate, two cores run two at a time — one thread each, since
# two 2-thread torch processes on 2 cores spend their time spinning on each other.
WORKERS ?= 2
TEST_THREADS ?= 1

.PHONY: setup reproduce test lab bench notebooks lint clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -q -r requirements.txt
	$(BIN)/pip install $(PIP_FLAGS) -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/kimi-mini reproduce --preset $(PRESET)

test: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(WORKERS) --durations=25 $(PYTEST_ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(BIN)/kimi-mini bench all

# Regenerate every .ipynb from its py:percent twin (the .py is the file you edit).
notebooks: $(STAMP)
	$(BIN)/python -m kimi_mini.notebooks sync

# On one H100/H200, in under ten minutes: pytest -m gpu, every notebook at PRESET=gpu (each within a time
# limit), the GPU benchmark rows -> runs/gpu/GPU_REPORT.md. Without a GPU: one line, exit status 2.
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(BIN)/python -m kimi_mini.gpu_check

lint: $(STAMP)
	$(BIN)/ruff check kimi_mini kernels tests

clean:
	rm -rf $(VENV) runs .pytest_cache data/cache
