"""`circuitlab plan` on Snakemake's dry run: what would run and why, and which rules Snakemake
cannot rerun on a change because it has no record of their jobs."""

from __future__ import annotations

import json
import shlex
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


def param(value: dict) -> str:
    """A JSON-slice param as Snakemake's reason writes it: the repr of the shell-quoted JSON
    (workflow/rules/common.smk:json_arg)."""
    return repr(shlex.quote(json.dumps(value, sort_keys=True, separators=(",", ":"))))


def test_a_changed_param_is_named_by_its_config_key() -> None:
    keys = plan.ConfigKeys(
        {"evaluation.min_accuracy": 0.85, "evaluation.batch_size": 64, "acdc.eap_sizes": [0.3],
         "lrp.batch_size": 64, "compare.top_k": 20}
    )  # fmt: skip
    # a scalar param (Snakemake's reason has values only): the key now holding the new value
    assert plan.explain_params(
        "Params have changed since last execution: before: 0.9 now: 0.85", keys
    ) == ["config evaluation.min_accuracy: 0.9 → 0.85"]
    # a JSON slice of a section: its key qualified by the section
    reason = f"Params have changed: before: {param({'eap_sizes': [0.01]})} now: " + param(
        {"eap_sizes": [0.3]}
    )
    assert plan.explain_params(reason, keys) == ["config acdc.eap_sizes: [0.01] → [0.3]"]
    # ambiguous: a few candidates are named, too many are not guessed
    assert keys.name(None, 64) == "evaluation.batch_size or lrp.batch_size"
    assert plan.ConfigKeys({f"k{i}": 1 for i in range(5)}).name(None, 1) == "a param"


def test_the_report_manifest_param_reads_as_one_line() -> None:
    old = {"models": {"toy": {"lrp": {"ioi": {"circuit": "data/c/ioi.json"}}}}, "benchmarks": []}
    new = {
        "models": {"toy": {"lrp": {"sva": {"circuit": "data/c/sva.json"}}}},
        "benchmarks": [{"path": "data/benchmarks/x.tsv"}],
    }
    text = f"Params have changed: before: {param(old)} now: {param(new)}"
    assert plan.explain_params(text) == [
        "the report reads 2 file(s) more and 1 fewer (the job graph changed)"
    ]


def test_a_failed_dry_run_is_its_error_without_the_traceback() -> None:
    text = """Building DAG of jobs...
Traceback (most recent call last):
  File "/x/snakemake/cli.py", line 2100, in main
    obj = open(configpath, encoding="utf-8")
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
FileNotFoundError: [Errno 2] No such file or directory: 'nope.yaml'
"""
    assert plan.snakemake_error(text) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'nope.yaml'"
    )


def test_plan_with_a_missing_overlay_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("models: {toy: {source: toy}}\n")
    ran = run("plan", "--workdir", tmp_path, "--configfile", tmp_path / "nope.yaml")
    assert ran.returncode == 2 and "does not exist" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) <= 2, ran.stderr


def test_disabling_a_task_names_it() -> None:
    """The toy model's corpus param loses the task's (empty) entry: that is the reason."""
    keys = plan.ConfigKeys({"tasks.capitals": None, "tasks.induction.seq_len": 6})
    before = param({"capitals": {}, "induction": {"seq_len": 6}, "refusal": {}})
    now = param({"induction": {"seq_len": 6}, "refusal": {}})
    assert plan.explain_params(f"Params have changed: before: {before} now: {now}", keys) == [
        "config tasks.capitals: {} → (unset)"
    ]
