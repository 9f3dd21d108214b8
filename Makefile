# One command each: `make demo` (set up, generate demo data, train, evaluate) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_RUN ?= outputs/demo

PIP_VERSION ?= 26.0.1
UV_VERSION  ?= 0.13.9
LOCK_ARGS   ?=

.PHONY: install lock demo demo-unimodal test bench gpu-check clean

install: $(VENV)/.installed

# Exactly the versions in requirements.lock (every package, hash-checked; the build backend too), then the package
# itself without touching them; pip check proves the set is consistent. pyproject.toml keeps the compatible ranges
# for people installing crossmodal into an environment of their own.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# Re-resolve pyproject.toml (the dev extra, which holds every other extra, and the build backend with its editable-install helper) into
# requirements.lock with uv, keeping the current pins where they still fit; `make lock LOCK_ARGS=--upgrade` takes the
# newest allowed releases. Then run `make test` before committing the new lock.
lock:
	$(PYTHON) -m venv .lock-tools
	.lock-tools/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	printf 'hatchling\neditables\n' | .lock-tools/bin/uv pip compile pyproject.toml - --extra dev --universal \
	  --python-version 3.11 --generate-hashes --quiet $(LOCK_ARGS) -o requirements.lock

demo: install
	rm -rf $(DEMO_RUN)
	$(BIN)/cmtrain hydra.run.dir=$(DEMO_RUN)
	$(BIN)/cmeval ckpt=$(DEMO_RUN)/checkpoints/best.ckpt   # writes $(DEMO_RUN)/eval-DATE_TIME/

# The same demo with the image alone: the baseline that fusion must beat.
demo-unimodal: install
	rm -rf $(DEMO_RUN)-image
	$(BIN)/cmtrain 'modalities=[image]' hydra.run.dir=$(DEMO_RUN)-image

# Loader, model ceiling, cmtrain end to end and a textbook loop, in one process (docs/benchmarks.md); pass
# BENCH_ARGS="--preset small" for a quick run.
bench: install
	$(BIN)/python scripts/benchmark.py --json benchmark.json $(BENCH_ARGS)

# The CUDA path proven and measured (scripts/gpu_check.py): the gpu tests, then the benchmark; the report
# (gpu-check.json, gpu-check.log) goes to $(OUT). Needs no .venv: where there is none (the GPU machine) a plain
# python3 with the packages on PYTHONPATH runs it (../shared/device/README.md). Without CUDA the tests skip.
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
OUT ?= gpu-check
gpu-check:
	$(GPU_PY) scripts/gpu_check.py --out $(OUT) $(GPU_CHECK_ARGS)

# One test process per core, one thread each (no OpenMP oversubscription); a test file stays on one process, so
# its module fixtures (a trained run) are built once.
test: install
	$(BIN)/lint-imports  # the layers of ../shared/DESIGN.md: [tool.importlinter] in pyproject.toml
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf outputs multirun .pytest_cache gpu-check
