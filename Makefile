# One command each: `make demo` (set up, generate demo data, train, evaluate) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_RUN ?= outputs/demo

.PHONY: install demo demo-unimodal test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

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

# One test process per core, one thread each (no OpenMP oversubscription); a test file stays on one process, so
# its module fixtures (a trained run) are built once.
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf outputs multirun .pytest_cache
