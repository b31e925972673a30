# circuitlab — the two commands a user needs: `make reproduce` and `make test`.
# Set-up is idempotent: a virtualenv in .venv, the CPU build of torch pinned first (so pip
# never pulls a multi-GB CUDA build on a CPU machine), then the package in editable mode.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
CORES  ?= all
STAMP  := $(VENV)/.circuitlab-installed

export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: setup reproduce plan accept test test-fast bench lint snapshot clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

reproduce: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/default

# What `make reproduce` would run, per rule, and why (config keys, code modules, inputs).
plan: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/circuitlab plan

# Keep the existing results after a change you know does not alter them (a refactor the code
# fingerprint sees as new code, say): records the current config and code as the ones every
# finished output was made with. Runs nothing; check `make plan` first.
accept: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores 1 --touch --workflow-profile workflow/profiles/default

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow"

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/benchmarks/run.py $(BENCH_ARGS)

# Version the current artifacts (every folder under data/) with DVC and push them to the default remote
# (~/.cache/circuitlab/dvc-store unless changed with `dvc remote modify store url …`).
snapshot: setup
	DVC_NO_ANALYTICS=1 $(BIN)/dvc add --quiet $$(find data -mindepth 1 -maxdepth 1 -type d | sort)
	DVC_NO_ANALYTICS=1 $(BIN)/dvc push --quiet

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean-results:
	rm -rf data/datasets data/models data/metrics data/plots data/report logs .snakemake
