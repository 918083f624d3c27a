# `make test` and `make demo` each install into .venv first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medveil-installed

.PHONY: install test demo demo-service lint clean

install: $(STAMP)

# torch first and pinned exactly: a range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,service]'
	touch $(STAMP)

# Two workers, one thread each: a third of the suite is process start-up and imports
# (the CLI runs as a user runs it), which a second worker overlaps. One module per
# worker (--dist loadfile): module fixtures (a bench run, a server, a trained model) are
# then built once, not once per worker (436 s against 589 s with --dist load).
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: install
	$(BIN)/medveil bench --quick --schemes all --out demo-output
	$(BIN)/medveil bench --quick --data chase-demo --schemes plain,primis,privacy_sf \
		--out demo-output/segmentation

# The wire: a local server, two centres push, one pooled model, each centre decodes.
demo-service: install
	rm -rf demo-output/service
	$(BIN)/python -m medveil.service.demo --budget quick --workdir demo-output/service

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo-output .pytest_cache
