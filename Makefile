# One venv under .venv; torch 2.13.0 (CPU wheel on the dev machines) goes in first so pip never
# resolves a multi-GB CUDA build for the torch range in pyproject.toml.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lint format test train distill sft zeroth-order experiment export bench demo browser-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,sft,eval,export,demo]'
	touch $(STAMP)

# ruff: lint rules and format settings in pyproject.toml; CI runs `make lint` before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q tests

# Where `make train` reads TinyStories: a folder with train.jsonl/validation.jsonl, or `hub`
# to download roneneldan/TinyStories (needs the Hub). Extra flags go in TRAIN_ARGS.
DATA ?= $(or $(TINY_DECODER_DATA),../shared/data/tinystories)
TRAIN_ARGS ?=

train: setup
	@test "$(DATA)" = hub || test -f "$(DATA)/train.jsonl" || { \
	  echo "error: no TinyStories copy at '$(DATA)' (train.jsonl missing)."; \
	  echo "       Run 'make train DATA=/path/to/folder' (train.jsonl + validation.jsonl), or 'make train DATA=hub' when online."; \
	  exit 2; }
	$(BIN)/python scripts/train.py configs/tiny_cpu.json \
	  $(if $(filter hub,$(DATA)),--dataset_path "",--dataset_path "$(DATA)") $(TRAIN_ARGS)

# The Minitron recipe: prune the `make train` model (TEACHER) to half its parameters, distil it
# for the steps in configs/recovery_cpu.json, train the same shape from scratch on the same
# schedule, and print one table. Trains the teacher first when it is missing.
TEACHER ?= runs/tiny
DATA_FLAG = $(if $(filter hub,$(DATA)),--dataset_path "",--dataset_path "$(DATA)")

distill: setup
	@test -f "$(TEACHER)/model.safetensors" || { test "$(TEACHER)" = runs/tiny && $(MAKE) train; } || { \
	  echo "error: no model at TEACHER=$(TEACHER) (model.safetensors missing)."; exit 2; }
	$(BIN)/python scripts/prune.py --model_name_or_path "$(TEACHER)" --target_params 50% \
	  --output_dir runs/tiny-pruned --overwrite_output_dir true $(DATA_FLAG)
	$(BIN)/python scripts/distill.py configs/recovery_cpu.json --model_name_or_path runs/tiny-pruned \
	  --teacher_name_or_path "$(TEACHER)" --alpha 1.0 --output_dir runs/tiny-distilled --overwrite_output_dir true $(DATA_FLAG)
	$(BIN)/python scripts/train.py configs/recovery_cpu.json --config_name runs/tiny-pruned --tokenizer_name "$(TEACHER)" \
	  --output_dir runs/tiny-scratch --overwrite_output_dir true $(DATA_FLAG)
	$(BIN)/python scripts/compare.py --models "$(TEACHER)" runs/tiny-pruned runs/tiny-distilled runs/tiny-scratch \
	  $(DATA_FLAG) --output_json runs/distill_table.json

# SFT: the offline instruction set from the same TinyStories copy, fine-tune the `make train` model
# (TEACHER, trained first when missing) for configs/sft_cpu.json's steps, then base vs fine-tuned.
sft: setup
	@test -f "$(TEACHER)/model.safetensors" || { test "$(TEACHER)" = runs/tiny && $(MAKE) train; } || { \
	  echo "error: no model at TEACHER=$(TEACHER) (model.safetensors missing)."; exit 2; }
	$(BIN)/python scripts/build_instructions.py $(DATA_FLAG) --output_dir runs/instruct --per_story 3 --overwrite_output_dir true
	$(BIN)/python scripts/sft.py configs/sft_cpu.json --model_name_or_path "$(TEACHER)" --dataset_path runs/instruct \
	  --output_dir runs/tiny-sft --overwrite_output_dir true
	$(BIN)/python scripts/evaluate_sft.py --base_model "$(TEACHER)" --sft_model runs/tiny-sft --dataset_path runs/instruct \
	  --output_json runs/sft_eval.json

# Zeroth-order (SPSA/MeZO, forward passes only) against AdamW: recover the pruned `make train` model (TEACHER,
# trained first when missing) and train `nano` from scratch, each both ways; table, curves and step memory
# in runs/zeroth-order.
zeroth-order: setup
	@test -f "$(TEACHER)/model.safetensors" || { test "$(TEACHER)" = runs/tiny && $(MAKE) train; } || { \
	  echo "error: no model at TEACHER=$(TEACHER) (model.safetensors missing)."; exit 2; }
	$(BIN)/python scripts/zeroth_order_experiment.py --base_model "$(TEACHER)" $(DATA_FLAG) --output_dir runs/zeroth-order

# Architecture switches one at a time (positions, norms, pre/post, activations, GQA, sliding-window and linear
# attention, orthogonal-parallel residuals, early-exit training): one table and curve in runs/experiment.
EXPERIMENT_ARGS ?=
experiment: setup
	$(BIN)/python scripts/experiment.py $(DATA_FLAG) --output_dir runs/experiment $(EXPERIMENT_ARGS)

# The `make train` model (TEACHER, trained first when missing) as a plain Llama folder in runs/tiny-llama.
export: setup
	@test -f "$(TEACHER)/model.safetensors" || { test "$(TEACHER)" = runs/tiny && $(MAKE) train; } || { \
	  echo "error: no model at TEACHER=$(TEACHER) (model.safetensors missing)."; exit 2; }
	$(BIN)/python scripts/export.py --model_name_or_path "$(TEACHER)" --format llama --output_dir runs/tiny-llama \
	  --overwrite_output_dir true

bench: setup
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/zeroth_order.py
	$(BIN)/python bench/attention_cost.py
	$(BIN)/python bench/recipe.py --dataset_path "$(DATA)"
	@if test -f "$(TEACHER)/model.safetensors"; then $(BIN)/python bench/runtimes.py --model "$(TEACHER)" && \
	  $(BIN)/python bench/engine.py --model "$(TEACHER)" && \
	  $(BIN)/python bench/demo_stream.py --model "$(TEACHER)"; \
	  else echo "bench/runtimes.py skipped: no model at $(TEACHER) (make train writes runs/tiny)"; fi

# The demo page (app.py) on http://127.0.0.1:7860 for DEMO_MODELS (folders or Hub ids, space-separated; visitors
# can load only these): the `make train` model, and the `make sft` one when it exists (the Chat tab needs it).
# The `make train` model is trained first when it is the one asked for and missing.
SFT_MODEL := $(patsubst %/model.safetensors,%,$(wildcard runs/tiny-sft/model.safetensors))
DEMO_MODELS ?= $(TEACHER) $(SFT_MODEL)
demo: setup
	@test -f "$(firstword $(DEMO_MODELS))/model.safetensors" || test "$(firstword $(DEMO_MODELS))" != runs/tiny || $(MAKE) train
	@test -n "$(SFT_MODEL)" || echo "note: no runs/tiny-sft, so the Chat tab has no model to chat with; 'make sft' writes it."
	$(BIN)/python app.py --model $(DEMO_MODELS) $(DEMO_ARGS)

# Headless Chromium for tests/demo/test_browser.py (it skips, saying so, without them). Debian/Ubuntu, as root or with sudo.
browser-deps:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium chromium-driver

clean:
	rm -rf $(VENV) runs build *.egg-info
