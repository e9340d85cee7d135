# One venv under .venv; torch 2.13.0 (CPU wheel on the dev machines) goes in first so pip never
# resolves a multi-GB CUDA build for the torch range in pyproject.toml.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test train bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q tests

train: setup
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/train.py configs/tiny_cpu.json

bench: setup
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) runs build *.egg-info
