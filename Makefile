# `make test` and `make demo` each install into .venv first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medveil-installed

.PHONY: install test demo demo-service lint clean bench-peers bench-full

install: $(STAMP)

# torch first and pinned exactly: a range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,service,federated]'
	touch $(STAMP)

# Two workers, one thread each: a third of the suite is process start-up and imports
# (the CLI runs as a user runs it), which a second worker overlaps. One module per
# worker (--dist loadfile): module fixtures (a bench run, a server, a trained model) are
# then built once, not once per worker (436 s against 589 s with --dist load).
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

# The demo budget: every scheme in minutes, a first look (its report says so); the
# quick and full figures are in docs/benchmarks.md. CHASE read at 128 px.
demo: install
	$(BIN)/medveil bench --budget demo --schemes all --executor processes --out demo-output
	$(BIN)/medveil bench --budget demo --data chase-demo --size 128 --executor processes \
		--schemes plain,primis,privacy_sf --out demo-output/segmentation

# The wire: a local server, two centres push, one pooled model, each centre decodes.
demo-service: install
	rm -rf demo-output/service
	$(BIN)/python -m medveil.service.demo --budget quick --workdir demo-output/service

# The full bench of every classification scheme on the chest X-rays (../shared): about
# 54 minutes on 2 cores from an empty cache, 33 from the cache a run filled
# (docs/benchmarks.md). Each run writes a new folder under bench-full/.
FULL_DATA ?= ../shared/data/cxr_pneumonia_64.npz
bench-full: install
	mkdir -p bench-full
	$(BIN)/medveil bench --data $(FULL_DATA) --schemes plain,fesf,obfuscation,primis,ckks \
		--executor processes --cache bench-full/cache --out bench-full/run-$$(date +%Y%m%d-%H%M%S)

# medveil and Orion side by side on the same folded weights (benchmarks/he_peers.py).
# Orion gets its own environment, never the project's: torch pinned as above, then
# orion-fhe without torchvision (it imports without it; torchvision would pull a
# CUDA build).
ORION := .venv-orion
$(ORION)/.installed:
	test -x $(ORION)/bin/python || $(PY) -m venv $(ORION)
	$(ORION)/bin/python -m pip install --quiet torch==2.13.0
	$(ORION)/bin/python -m pip install --quiet --no-deps orion-fhe==1.0.2
	$(ORION)/bin/python -m pip install --quiet PyYAML certifi h5py matplotlib numpy \
		'scipy<=1.14.1' tqdm
	touch $@

bench-peers: install $(ORION)/.installed
	$(BIN)/python benchmarks/he_peers.py --orion-python $(ORION)/bin/python \
		--out runs/he_peers.json

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo-output .pytest_cache
