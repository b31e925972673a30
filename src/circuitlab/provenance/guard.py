"""The rebuild guard: a run repairs every edited or deleted artifact of its job graph in the same
invocation, and `make plan`'s dry run shows exactly that.

The Snakefile calls `install` once every rule is defined. The recorded outputs
(`circuitlab.provenance.manifest`) of this run's jobs that were edited or deleted since their
job wrote them are added to Snakemake's ``--forcerun``: they become targets of this run (as
Snakemake makes every forced file a target), their jobs rerun and so does what depends on them.
A dry run forces the same files, so the plan is the run. Before that, the state a snapshot
carries is restored for the outputs that are that snapshot's (`circuitlab.provenance.state`),
so a ``dvc checkout`` or ``dvc pull`` of a snapshot leaves nothing to do. Nothing is moved or
deleted here: an edited file is copied aside (`keep_edits`) and stays where it is until its
own job rewrites it (Snakemake removes a job's old outputs just before running it), so a run
stopped early loses nothing and the next run repairs it.

Snakemake 9 parses the Snakefile before it hands the workflow its DAG settings (the
``--forcerun`` it was given), so the forced files are added when the DAG is prepared: this
workflow's ``_prepare_dag`` is wrapped, and a Snakemake without it is an error, never a silent
skip.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from circuitlab.errors import CircuitlabError
from circuitlab.provenance.manifest import Repairs, altered, keep_edits, repairs
from circuitlab.provenance.state import restore_state

#: Snakemake invocations that only report, record or clean (`make accept` is ``--touch``):
#: they neither force nor keep anything
REPORTING = (
    "--report",
    "--summary",
    "--detailed-summary",
    "--lint",
    "--dag",
    "--rulegraph",
    "--filegraph",
    "--d3dag",
    "--unlock",
    "--touch",
    "-t",
    "--cleanup-metadata",
    "--cleanup-shadow",
    "--list-changes",
    "--delete-all-output",
    "--delete-temp-output",
)
ENV_ACCEPT = "CIRCUITLAB_ACCEPT"


def acts(workflow: Any, argv: Sequence[str], env: dict[str, str] | None = None) -> bool:
    """Whether this Snakemake invocation plans or runs jobs (a run or a dry run of the main
    process), rather than reporting, touching, or running one job on a cluster node."""
    env = os.environ if env is None else env
    if not getattr(workflow, "is_main_process", True) or env.get(ENV_ACCEPT) == "1":
        return False
    return not any(a in REPORTING or a.startswith("--list") for a in argv)


def install(
    workflow: Any,
    outputs: Iterable[str],
    *,
    dry: bool,
    root: Path = Path("."),
    argv: Sequence[str] | None = None,
) -> Repairs:
    """Force this run's edited or deleted outputs (`outputs`: every output file of its job
    graph) and, in a real run, keep a copy of each edit; say what on stderr. Returns what was
    found."""
    argv = sys.argv[1:] if argv is None else argv
    if not acts(workflow, argv):
        return Repairs((), ())
    adopted = restore_state(root)  # a restored snapshot is as current as when it was taken
    if adopted:
        sys.stderr.write(
            f"circuitlab: {len(adopted)} outputs are a snapshot's (data/state/, `make "
            "snapshot`): their recorded state is restored with them\n"
        )
    found = repairs(altered(root), outputs)
    for c in found.outside:
        sys.stderr.write(
            f"circuitlab: {c.path} was {c.why} since its job wrote it, but no job of this "
            "config writes it: left as it is\n"
        )
    if not found.forced:
        return found
    forced = {c.path for c in found.forced}
    prepare = getattr(workflow, "_prepare_dag", None)
    if prepare is None:
        raise CircuitlabError(
            "this Snakemake has no Workflow._prepare_dag, which circuitlab's rebuild guard "
            "wraps to force the edited or deleted outputs; install the Snakemake version "
            "pyproject.toml names (`make setup`)"
        )

    def prepare_with_repairs(*args: Any, **kwargs: Any) -> Any:
        settings = workflow.dag_settings
        settings.forcerun = frozenset(settings.forcerun) | forced
        return prepare(*args, **kwargs)

    workflow._prepare_dag = prepare_with_repairs
    kept = [] if dry else keep_edits(found.forced, root)
    what = ", ".join(f"{c.path} ({c.why})" for c in found.forced[:5])
    if len(found.forced) > 5:
        what += f" and {len(found.forced) - 5} more"
    done = "a run rebuilds them (forced)" if dry else "rebuilt in this run (forced)"
    copies = f"; the edited copies are kept: {', '.join(map(str, kept))}" if kept else ""
    sys.stderr.write(
        f"circuitlab: changed by hand since their job wrote them: {what}; {done}{copies}\n"
    )
    return found
