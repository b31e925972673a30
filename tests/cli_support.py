"""Run the `circuitlab` console script in-process, as a user's shell would call it."""

from __future__ import annotations

import sys

import pytest

from circuitlab import cli


def call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object
) -> tuple[int, str]:
    """`circuitlab ARGS` with W&B disabled; returns (exit code, stderr)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["circuitlab", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err
