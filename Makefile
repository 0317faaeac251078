# Two entry points, each installing what it needs first:
#   make sample-cache   build a cache from the bundled recordings (the main job)
#   make test           run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install sample-cache test bench browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

sample-cache: $(STAMP)
	$(BIN)/chirpid-io build-cache --samples sample-cache
	$(BIN)/chirpid-io inspect sample-cache

# headless Chromium for the report's browser test (Debian's package; needs root or sudo)
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --out bench-report

clean:
	rm -rf sample-cache bench-report .pytest_cache .benchmarks
