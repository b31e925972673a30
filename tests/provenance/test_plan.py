"""`circuitlab plan` on Snakemake's dry run: what would run and why, and which rules Snakemake
cannot rerun on a change because it has no record of their jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitlab.provenance import plan
from cli_support import run

DRY_RUN = """Building DAG of jobs...
Nothing to be done (all requested files are present and up to date).
1 jobs have missing provenance/metadata so that it in part cannot be used to trigger re-runs.
Rules with missing metadata: train_toy_model
"""


def test_missing_metadata_is_read_from_the_dry_run() -> None:
    assert plan.missing_metadata(DRY_RUN) == ["train_toy_model"]
    assert plan.missing_metadata("Rules with missing metadata: b a b\n") == ["a", "b"]
    assert plan.missing_metadata("Nothing to be done.\n") == []


def test_plan_says_which_rules_a_change_cannot_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Snakefile").write_text("")
    monkeypatch.setattr(plan, "dry_run", lambda workdir, snakemake, args: DRY_RUN)
    ran = run("plan", "--workdir", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "Nothing to be done" in ran.stdout
    assert "no record of how the outputs of train_toy_model were made" in ran.stderr
    assert "--forcerun train_toy_model" in ran.stderr and "make accept" in ran.stderr
