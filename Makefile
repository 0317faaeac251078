# Two entry points, each installing what it needs first:
#   make sample-cache   build a cache from the bundled recordings (the main job)
#   make test           run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install sample-cache test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

sample-cache: $(STAMP)
	$(BIN)/chirpid-io build-cache --samples sample-cache
	$(BIN)/chirpid-io inspect sample-cache

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --out bench-report

clean:
	rm -rf sample-cache bench-report .pytest_cache .benchmarks
