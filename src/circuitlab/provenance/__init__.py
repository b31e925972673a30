"""Provenance: what made each artifact, so that reruns follow every change and results can be
traced and reproduced on another machine.

* `circuitlab.provenance.code` — the code fingerprint of a pipeline job (a rule's ``code``
  param, so editing the code a job runs reruns it, and a docstring edit does not);
* `circuitlab.provenance.numerics` — the numerics pins every job runs under, and the record of
  the environment a result came from;
* `circuitlab.provenance.plan` — ``circuitlab plan``: what a run would redo, and why.

`job_record` is what every metrics file and W&B run carries (`circuitlab.tracking`).
"""

from __future__ import annotations

import os
from typing import Any

#: set by the CLI entry point: the command this process runs, and its plugin modules
ENV_COMMAND = "CIRCUITLAB_COMMAND"
ENV_PLUGINS = "CIRCUITLAB_PLUGINS"
#: a cache file for `circuitlab.provenance.code.CodeIndex` (the Snakefile points jobs at its own)
ENV_CODE_CACHE = "CIRCUITLAB_CODE_CACHE"


def job_record() -> dict[str, Any]:
    """The provenance of the result this process writes: the environment (versions, CPU, code
    paths, pins, threads, git state) and, when it runs a CLI command, the digest of that
    command's code fingerprint (the same code the rule's ``code`` param hashes)."""
    from pathlib import Path

    from circuitlab.provenance.code import CodeIndex
    from circuitlab.provenance.numerics import environment

    record: dict[str, Any] = {"environment": environment()}
    command = os.environ.get(ENV_COMMAND)
    if command:
        cache = os.environ.get(ENV_CODE_CACHE)
        index = CodeIndex.for_installed(cache=Path(cache) if cache else None)
        if command in index.commands:  # else not a pipeline command (`circuitlab --help`)
            plugins = [p for p in os.environ.get(ENV_PLUGINS, "").split(",") if p]
            fp = index.fingerprint(command, plugins)
            record["code"] = {"command": command, "digest": fp.digest}
    return record
