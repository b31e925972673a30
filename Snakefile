# circuitlab pipeline: datasets ─▶ model ─▶ checked datasets ─▶ model evaluation ─▶ blacklist
# ─▶ LRP circuits ─▶ faithfulness; ACDC edge circuits ─▶ edge-circuit evaluation; steering and
# CAA ─▶ CAA vs circuit ─▶ report.
# Run `make reproduce` (or `.venv/bin/snakemake --cores all --workflow-profile workflow/profiles/default`).
# Rules are thin: paths, params from the config, a log, and one call of the `circuitlab` CLI.

import os
import sys
from pathlib import Path

from snakemake.utils import validate

from circuitlab.config import load_config, read_config_yaml, write_resolved
from circuitlab.errors import ConfigError


# The base config's YAML is read here first: a syntax error is one line with its line number
# (Snakemake's own message has none). An overlay given with --configfile is read by Snakemake
# before this file runs: `make … CONFIG=…` checks it first (`circuitlab validate-config`).
try:
    read_config_yaml("config/config.yaml")
except ConfigError as exc:
    sys.stderr.write(f"{exc}\n")
    sys.exit(1)


configfile: "config/config.yaml"


# The jobs call the `circuitlab` CLI of the environment Snakemake runs in, activated or not
# (`.venv/bin/snakemake` works as typed).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# Without the workflow profile a failed job's log is not shown: say how to get it.
_out = getattr(workflow, "output_settings", None)
if _out is not None and not _out.show_failed_logs and not _out.dryrun:
    sys.stderr.write(
        "circuitlab: run with `--workflow-profile workflow/profiles/default` (as `make reproduce` "
        "does) to see a failed job's log here; `make watch` follows the running jobs.\n"
    )

# The pydantic model first: a typo gets one short message naming the key and the allowed ones
# (the schema's validation below would print the whole schema).
try:
    CFG = load_config(config, where="config/config.yaml merged with any --configfile")
except ConfigError as exc:
    sys.stderr.write(f"{exc}\n")
    sys.exit(1)


# DVC's params file: every key of the config in effect, defaults included, so `dvc params diff`
# shows a changed default as "50 → 20" (README, "History"). A run writes it; a dry run, a
# cluster node, `--report`, `--touch` (`make accept`) and the like do not.
from circuitlab.provenance import guard

_REAL_RUN = guard.acts(workflow, sys.argv[1:]) and not (_out is not None and _out.dryrun)
if _REAL_RUN:
    write_resolved(CFG)


# `snakemake --report report.html`: this text, the captions in workflow/report/ and the
# figures marked report(...) in the rules (the pipeline's own page is data/report/index.html).
report: "workflow/report/workflow.rst"


# Defaults come from the pydantic model (circuitlab.config), not from the schema.
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/lrp.smk"
include: "workflow/rules/acdc.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/report.smk"


FINAL_OUTPUTS = final_outputs()


rule all:
    default_target: True
    input:
        FINAL_OUTPUTS,


# Never lose a file (README, "Edited, damaged or deleted files"): the recorded outputs of this
# run's jobs edited or deleted since their job wrote them are forced, so they are rebuilt in this
# very run with what depends on them; a dry run and `make plan` force the same. Nothing is moved:
# an edited file is copied aside and stays in place until its job rewrites it.
guard.install(workflow, FINAL_OUTPUTS, dry=_out is not None and _out.dryrun)


# One warm process for this run's jobs (circuitlab.warm): torch, transformers and W&B are
# imported once, and each job's `circuitlab` command runs in a fork of it (4.5 s of CPU saved
# per job, results bit-identical). Started when the jobs are about to run (Snakemake runs no
# `onstart` for a dry run or when there is nothing to do), after every variable the jobs
# inherit is set (the numerics pins: common.smk). Local runs only; CIRCUITLAB_WARM=0: none.
from circuitlab import warm

_WARM = []


onstart:
    if _REAL_RUN and workflow.local_exec:
        _WARM.extend(s for s in [warm.start()] if s is not None)


def _stop_warm(log):
    for server in _WARM:
        server.stop()


onsuccess:
    _stop_warm(log)


onerror:
    _stop_warm(log)
