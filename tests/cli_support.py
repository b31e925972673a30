"""The one way tests run the `circuitlab` command, as a user's shell (or Snakemake) calls it.

`run` calls the entry point in this process (the option checks, the stage, the error handling
and exit code, the all-or-nothing outputs: everything but the interpreter's start), with its
own argv, working directory, environment and captured stdout/stderr, so a test pays for no
fresh import of torch. `run_fresh` starts a new interpreter, for what only a new process shows:
what a command imports, how fast it fails, a process killed mid-write.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from circuitlab import cli

#: W&B stays off in tests unless a test turns it on.
ENV = {"WANDB_MODE": "disabled"}
COMMAND = [sys.executable, "-m", "circuitlab.cli"]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None) -> Ran:
    """`circuitlab ARGS` in this process; returns its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update({**ENV, **(env or {})})
    sys.argv = ["circuitlab", *map(str, args)]
    code = 0
    try:
        with (
            contextlib.chdir(cwd or Path.cwd()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return Ran(code, out.getvalue(), err.getvalue())


def run_fresh(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`circuitlab ARGS` in a new interpreter (``python -m circuitlab.cli``)."""
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, **(env or {})},
    )


def call(*args: object, cwd: Path | None = None) -> tuple[int, str]:
    """`run`, as (exit code, stderr): what most error tests look at."""
    ran = run(*args, cwd=cwd)
    return ran.returncode, ran.stderr
