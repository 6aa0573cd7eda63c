# The two commands of the quick start; everything they need is installed from here.
#   make run    set up, then compress resnet18 to 99% sparsity on SynthFaces
#   make test   set up (with Debian's chromium for the viewer's browser test), then run the test suite
#
# Two profiles. The full one (.venv, Python 3.11) has DeepSparse, the sparse CPU engine the
# speed numbers come from, and sparseml 1.8, the oracle of the recipe executor's tests;
# both reached end of life and install on Python 3.11 with numpy < 2 only, so `make run`
# and `make test` use it. The current one (.venv-current, Python 3.13 or 3.12, numpy 2,
# the newest onnx and onnxruntime) is what `pip install sparsebias` gives on a current
# stack; `make test-current` runs the suite there, where DeepSparse's and sparseml's
# tests skip with the reason. `.ci/run` runs both.

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
# the first Python 3.13 or 3.12 that runs: a pyenv shim is on PATH for every version pyenv
# has, but answers "command not found" for one that is not selected, so each is tried
PYTHON_CURRENT ?= $(shell for p in python3.13 python3.12 \
                      $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3 \
                      $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3; do \
                    $$p -c 'import sys; assert sys.version_info >= (3, 12); print(sys.executable)' \
                      2>/dev/null && break; done)
VENV_CURRENT   ?= .venv-current

SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-current browser run test test-current test-all clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26"
	$(BIN)/pip install --quiet -e ".[deepsparse,sparseml,test]"
	touch $@

setup-current: $(VENV_CURRENT)/.installed

$(VENV_CURRENT)/.installed: pyproject.toml
	@test -n "$(PYTHON_CURRENT)" || { echo "make setup-current: no Python 3.13 or 3.12 found (set PYTHON_CURRENT)"; exit 2; }
	$(PYTHON_CURRENT) -m venv $(VENV_CURRENT)
	$(VENV_CURRENT)/bin/pip install --quiet --upgrade "pip<26"
	$(VENV_CURRENT)/bin/pip install --quiet -e ".[test]"
	touch $@

# headless Chromium and its driver, for tests/test_viewer.py
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

run: setup
	$(BIN)/sparsebias compress --recipe recipes/resnet18_99.yaml

# lint-imports: the layering in pyproject.toml (a stage imports only the stages below it)
# two pytest-xdist workers (one thread each, tests/conftest.py); the tests that share a slow
# fixture share a worker (--dist loadgroup)
PYTEST_PARALLEL = -n 2 --dist loadgroup

test: setup browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -m "not slow" $(PYTEST_PARALLEL)

test-current: setup-current browser
	$(VENV_CURRENT)/bin/lint-imports --no-cache
	$(VENV_CURRENT)/bin/pytest -m "not slow" $(PYTEST_PARALLEL)

test-all: setup browser
	$(BIN)/pytest $(PYTEST_PARALLEL)

clean:
	rm -rf $(VENV) $(VENV_CURRENT) exported/* exported/.work .pytest_cache
