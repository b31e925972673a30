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

# An overlay config merged into config/config.yaml, as `snakemake --configfile` merges it:
#   make reproduce CONFIG=config/gpt2.yaml      (also for dryrun, plan, accept, report)
CONFIG ?=
# Extra Snakemake arguments, e.g. ARGS="--forcerun acdc_circuit"
ARGS   ?=
REPORT ?= report.html
CONFIGFILE := $(if $(CONFIG),--configfile $(CONFIG))
# A wrong CONFIG (no such file, bad YAML, an unknown key) fails here in one line, before
# Snakemake (which would print a traceback for a missing --configfile).
CHECK_CONFIG = $(if $(CONFIG),$(BIN)/circuitlab validate-config $(CONFIG) > /dev/null &&)
# Snakemake with the venv's tools on PATH and the workflow profile (failed jobs' logs shown)
SNAKEMAKE  := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default $(CONFIGFILE)

.PHONY: setup reproduce robustness dryrun plan accept watch report results screenshots test test-unit test-integration test-slow test-fast bench gpu-check lint snapshot clean-results clean-history history

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Outputs edited or deleted by hand since their job wrote them are rebuilt in this run (an edit
# is copied to .snakemake/circuitlab/edited/ first); README, "Edited, damaged or deleted files".
reproduce: setup
	$(CHECK_CONFIG) $(SNAKEMAKE) --cores $(CORES) $(ARGS)

# The report's verdicts on three training seeds of the embedded model (config/robustness.yaml):
# two more models are trained and run through every stage (22 min in all here, 2 cores); the
# report and data/metrics/robustness/toy.json say which verdicts hold on every seed.
ROBUSTNESS ?= config/robustness.yaml
robustness: setup
	$(BIN)/circuitlab validate-config $(ROBUSTNESS) > /dev/null && $(CHECK_CONFIG) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default --configfile $(CONFIG) $(ROBUSTNESS) --cores $(CORES) $(ARGS)

# The jobs a run would execute (Snakemake's dry run; `make plan` says why, per rule).
dryrun: setup
	$(CHECK_CONFIG) $(SNAKEMAKE) -n $(ARGS)

# What `make reproduce` would run, per rule, and why (config keys, code modules, inputs).
plan: setup
	$(CHECK_CONFIG) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/circuitlab plan $(CONFIGFILE)

# Follow a running `make reproduce` from a second terminal: one line per running job.
watch: setup
	$(BIN)/circuitlab watch

# RESULTS.md: the results tables of the run in data/, stamped with model weights and commit
# (MODELS="toy" keeps only those models, e.g. after `make robustness`).
MODELS ?=
results: setup
	$(BIN)/circuitlab results $(foreach m,$(MODELS),--model $(m))

# The report as a browser draws it: data/report/screenshot.png (the whole page) and
# first-screen.png (what a reader sees first); needs chromium: apt-get install chromium
screenshots: setup
	$(BIN)/circuitlab screenshot
	$(BIN)/circuitlab screenshot --first-screen --out data/report/first-screen.png

# Snakemake's own report of the last run (rules, runtimes, the figures marked report(...)).
report: setup
	$(CHECK_CONFIG) $(SNAKEMAKE) --report $(REPORT)

# Keep the existing results after a change you know does not alter them (a refactor the code
# fingerprint sees as new code, say): records the current config and code as the ones every
# finished output was made with. Runs nothing; check `make plan` first.
accept: setup
	$(CHECK_CONFIG) CIRCUITLAB_ACCEPT=1 $(SNAKEMAKE) --cores 1 --touch
	$(BIN)/circuitlab altered --accept

# The whole suite on two pytest-xdist workers: the tests around the shared pipeline run on one,
# the other pipelines and trainings then the unit tests on the other (tests/conftest.py); on 2
# cores 6 min 04 s (BENCHMARKS.md, issue 29). TEST_WORKERS=0: one process (the usual test
# order, one test's output at a time).
TEST_WORKERS ?= 2
PYTEST := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest
XDIST   = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

test: setup
	$(PYTEST) $(XDIST) $(ARGS)

# By cost, as TransformerLens sorts its suite: unit tests (seconds each), integration tests (a
# CLI, the REPL, TransformerLens, the bad-input and safety checks), and the slow ones (a whole
# Snakemake pipeline or a toy-model training).
test-unit: setup
	$(PYTEST) $(XDIST) -m "not slow" --ignore=tests/integration --ignore=tests/hardening --ignore=tests/interop $(ARGS)

test-integration: setup
	$(PYTEST) $(XDIST) -m "not slow" tests/integration tests/hardening tests/interop $(ARGS)

test-slow: setup
	$(PYTEST) $(XDIST) -m slow $(ARGS)

test-fast: setup
	$(PYTEST) $(XDIST) -m "not slow" $(ARGS)

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/benchmarks/run.py $(BENCH_ARGS)

# Version the current artifacts (every folder under data/) with DVC and push them to the default remote
# (~/.cache/circuitlab/dvc-store unless changed with `dvc remote modify store url …`). First
# data/state/ (what made each artifact: a checkout of the snapshot then plans nothing) and
# data/wandb/ (a copy of the offline W&B runs: the history travels with the snapshot).
snapshot: setup
	$(BIN)/circuitlab save-state
	DVC_NO_ANALYTICS=1 $(BIN)/dvc add --quiet $$(find data -mindepth 1 -maxdepth 1 -type d | sort)
	DVC_NO_ANALYTICS=1 $(BIN)/dvc push --quiet

# The recorded runs (DVC snapshots) side by side: headline results and the params that changed
# (N=5 for more snapshots). Every metric: `dvc exp show -n 2 --only-changed`.
N ?= 3
history: setup
	$(BIN)/circuitlab history -n $(N)

# The accelerator check (scripts/gpu_check.py): every stage of config/gpu-check.yaml on a random
# model of SHAPE (config/shapes/) on DEVICE, the same case on the CPU, results compared within
# tolerance; timings and peak GPU memory in data/gpu-check/SHAPE-DEVICE.json. DEVICE=cpu runs
# both legs on the CPU (the test suite: SHAPE=tiny-llama); DTYPE=bfloat16 as a GPU run would.
DEVICE ?= cuda
SHAPE  ?= gpt2-small
DTYPE  ?= float32
gpu-check: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/gpu_check.py --device $(DEVICE) --shape $(SHAPE) --dtype $(DTYPE)

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# Deletes every result; keeps the experiment history (the offline W&B runs in logs/wandb/ and
# their copy in data/wandb/) and the edits a run copied aside (.snakemake/circuitlab/edited/).
clean-results:
	rm -rf data/datasets data/models data/metrics data/summary data/plots data/report data/circuits \
	  data/blacklists data/steering data/caa data/compare data/benchmarks data/state
	find logs -mindepth 1 -maxdepth 1 ! -name wandb -exec rm -rf {} + 2>/dev/null || true
	find .snakemake -mindepth 1 -maxdepth 1 ! -name circuitlab -exec rm -rf {} + 2>/dev/null || true
	find .snakemake/circuitlab -mindepth 1 -maxdepth 1 ! -name edited -exec rm -rf {} + 2>/dev/null || true

# Deletes the experiment history (the offline W&B runs, logs/wandb/), after asking: offline, it
# is the only copy of the runs not yet synced (`wandb sync`) or snapshotted (`make snapshot`).
# YES=1 skips the question.
clean-history:
	@n=$$(ls -d logs/wandb/offline-run-* 2>/dev/null | wc -l); \
	if [ "$$n" = 0 ]; then echo "no W&B runs in logs/wandb"; exit 0; fi; \
	if [ "$(YES)" != 1 ]; then \
	  printf "delete %s offline W&B runs in logs/wandb (not synced anywhere unless you did)? [y/N] " "$$n"; \
	  read answer; [ "$$answer" = y ] || [ "$$answer" = yes ] || { echo "kept"; exit 1; }; \
	fi; \
	rm -rf logs/wandb && echo "deleted $$n W&B runs"
