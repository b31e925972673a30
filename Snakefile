# circuitlab pipeline: datasets ─▶ model ─▶ checked datasets ─▶ model evaluation ─▶ blacklist
# ─▶ LRP circuits ─▶ faithfulness; ACDC edge circuits ─▶ edge-circuit evaluation; steering and
# CAA ─▶ CAA vs circuit ─▶ report.
# Run `make reproduce` (or `.venv/bin/snakemake --cores all --workflow-profile workflow/profiles/default`).
# Rules are thin: paths, params from the config, a log, and one call of the `circuitlab` CLI.

import os
import sys
from pathlib import Path

from snakemake.utils import validate

from circuitlab.config import load_config
from circuitlab.errors import ConfigError


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

# Artifacts edited by hand since their job wrote them (circuitlab.provenance.manifest): a run
# sets them aside (kept under .snakemake/circuitlab/edited/) so Snakemake rebuilds them and what
# depends on them; a dry run only lists them.
from circuitlab.provenance.manifest import altered, set_aside

_changed = altered(Path("."))
if _changed:
    # Only the main process of a run that executes jobs acts: a dry run, a report, a job's own
    # Snakemake (SLURM) or `make accept` (which records the files on disk as current) lists.
    _flags = ("--report", "--summary", "--detailed-summary", "--lint", "--dag", "--rulegraph",
              "--filegraph", "--unlock", "--touch", "-t", "--cleanup-metadata", "--list-changes")
    _dry = (
        (_out is not None and _out.dryrun)
        or not getattr(workflow, "is_main_process", True)
        or os.environ.get("CIRCUITLAB_ACCEPT") == "1"
        or any(Path(".snakemake/locks").glob("*.lock"))  # another run is writing
        or any(a in _flags or a.startswith("--list") for a in sys.argv[1:])
    )
    _what = ", ".join(f"{c.path} ({c.why})" for c in _changed[:5])
    _what += f" and {len(_changed) - 5} more" if len(_changed) > 5 else ""
    if _dry:
        sys.stderr.write(
            f"circuitlab: changed by hand since their job wrote them: {_what}; a run rebuilds them\n"
        )
    else:
        _moved = set_aside(_changed)
        sys.stderr.write(
            f"circuitlab: changed by hand since their job wrote them: {_what}; set aside under "
            f".snakemake/circuitlab/edited/ and rebuilt: {', '.join(_moved)}\n"
        )

# The pydantic model first: a typo gets one short message naming the key and the allowed ones
# (the schema's validation below would print the whole schema).
try:
    CFG = load_config(config, where="config/config.yaml merged with any --configfile")
except ConfigError as exc:
    sys.stderr.write(f"{exc}\n")
    sys.exit(1)


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
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
