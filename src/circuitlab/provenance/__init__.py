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
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: a cache file for `circuitlab.provenance.code.CodeIndex` (the Snakefile points jobs at its own)
ENV_CODE_CACHE = "CIRCUITLAB_CODE_CACHE"

#: the `circuitlab` command this process is running and its plugin modules (`running`); None
#: in a library call (a notebook, a test), which is recorded as such
_RUNNING: tuple[str, tuple[str, ...]] | None = None

#: the device and dtype the running command loaded its model on (`note_device`); None before
#: a model is loaded, and for a command that loads none
_DEVICE: dict[str, Any] | None = None


@contextmanager
def running(command: str, plugins: Sequence[str] = ()) -> Iterator[None]:
    """While the CLI runs `command`: what `job_record` names as the maker of a result. Held in
    this process only (never in the environment, which a later call in the same process or a
    child process would inherit and misname)."""
    global _RUNNING, _DEVICE
    saved, _RUNNING = _RUNNING, (command, tuple(plugins))
    saved_device, _DEVICE = _DEVICE, None
    try:
        yield
    finally:
        _RUNNING, _DEVICE = saved, saved_device


def note_device(record: dict[str, Any]) -> None:
    """Record the device a command's model runs on (`numerics.device_record`): every result
    the command writes afterwards carries it (`job_record`). Outside a command (a library
    call) nothing is kept: there is no command to name it under."""
    global _DEVICE
    if _RUNNING is not None:
        _DEVICE = dict(record)


def maker() -> str:
    """What made a result in this process: ``circuitlab <command>`` inside the CLI, else the
    program (``pytest``, ``python analysis.py``, ``python -c`` …)."""
    if _RUNNING is not None:
        return f"circuitlab {_RUNNING[0]}"
    argv = list(sys.argv) or [""]
    program = Path(argv[0]).name
    if program in ("__main__.py", ""):  # python -m pkg: the package's folder names it
        program = Path(argv[0]).parent.name or "python"
    if program in ("-c", "-m"):
        return f"python {program}"
    return program if not program.endswith(".py") else f"python {program}"


def job_record() -> dict[str, Any]:
    """The provenance of the result this process writes: what made it (`maker`), the
    environment (versions, CPU, code paths, pins, threads, git state), the device and dtype of
    the command's model (`note_device`; the GPU on CUDA) and, inside a CLI command, the digest of that command's code fingerprint (the same code the rule's ``code`` param
    hashes)."""
    from circuitlab.provenance.code import CodeIndex
    from circuitlab.provenance.numerics import environment

    record: dict[str, Any] = {"made_by": maker(), "environment": environment()}
    if _DEVICE is not None:
        record["model_device"] = _DEVICE
    if _RUNNING is not None:
        command, plugins = _RUNNING
        cache = os.environ.get(ENV_CODE_CACHE)
        index = CodeIndex.for_installed(cache=Path(cache) if cache else None)
        if command in index.commands:  # else not a pipeline command (`circuitlab --help`)
            fp = index.fingerprint(command, list(plugins))
            record["code"] = {"command": command, "digest": fp.digest}
    return record
