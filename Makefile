# The two commands of the quick start; everything they need is installed from here.
#   make run    set up, then compress resnet18 to 99% sparsity on SynthFaces
#   make test   set up, then run the test suite

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup run test test-all clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: setup
	$(BIN)/sparsebias compress --recipe recipes/resnet18_99.yaml

test: setup
	$(BIN)/pytest -m "not slow"

test-all: setup
	$(BIN)/pytest

clean:
	rm -rf $(VENV) exported/* exported/.work .pytest_cache
