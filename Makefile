# Set-up and everyday commands. Every target creates the virtual environment it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job on its embedded default (random tiny weights)
	$(BIN)/python -m lvjax.demo

test: $(STAMP)  ## the CI subset (heavy tests left out)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -m "not heavy" -n 2 --dist loadfile

test-all: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) build *.egg-info
