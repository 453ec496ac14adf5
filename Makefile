# Set-up and everyday commands. Every target creates the virtual environment it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-random train-tiny compare-tiny test test-all bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -e '.[test]'  # no byte-compiling of torch & co: 41 s instead of 125 s
	touch $(STAMP)

demo: $(STAMP)  ## the shipped tiny model (trained by lvjax train) answering fresh synthetic videos
	JAX_PLATFORMS=cpu $(BIN)/python -m lvjax.demo

demo-random: $(STAMP)  ## the pipeline on a random-weight tiny model in the original format
	JAX_PLATFORMS=cpu $(BIN)/python -m lvjax.demo --random

train-tiny: $(STAMP)  ## rebuild the shipped tiny model (data, tokenizer, both stages) into lvjax/assets
	JAX_PLATFORMS=cpu $(BIN)/python -m lvjax.tiny_model build --work runs/tiny --out lvjax/assets

compare-tiny: $(STAMP)  ## the XComp comparison (none / LP-Comp / QC-Comp / more frames) on the test split
	JAX_PLATFORMS=cpu $(BIN)/python -m lvjax.tiny_model compare --work runs/tiny

test: $(STAMP)  ## the CI subset (heavy tests left out)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -m "not heavy" -n 2 --dist loadfile

test-all: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) build *.egg-info
