# The two commands of the quick start; everything they need is installed from here.
#   make run    set up, then compress resnet18 to 99% sparsity on SynthFaces
#   make test   set up (with Debian's chromium for the viewer's browser test), then run the test suite

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser run test test-all clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# headless Chromium and its driver, for tests/test_viewer.py
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

run: setup
	$(BIN)/sparsebias compress --recipe recipes/resnet18_99.yaml

test: setup browser
	$(BIN)/pytest -m "not slow"

test-all: setup browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) exported/* exported/.work .pytest_cache
