"""Provenance on the shared completed tiny pipeline run: every module a job loaded is in its
code fingerprint; editing a stage's module (in a copy of the package) plans exactly that stage
and its downstream jobs, a docstring edit plans nothing; `circuitlab plan` says why; every
metrics file records its environment and code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from circuitlab import tracking
from circuitlab.provenance.code import CodeIndex, is_untracked, plugins_for
from pipeline_support import BIN, planned_jobs, snakemake, snakemake_env

pytestmark = pytest.mark.slow  # they share the session's completed pipeline run

SRC = Path(__file__).resolve().parents[2] / "src"
OWN = ("Params have changed", "Updated input files", "Missing output", "Code has changed")


def test_every_module_a_job_loaded_is_in_its_fingerprint(pipeline_run) -> None:  # type: ignore[no-untyped-def]
    index = CodeIndex.for_installed()
    traces = [json.loads(p.read_text()) for p in pipeline_run.trace.glob("*.json")]
    commands = {t["argv"][0] for t in traces}
    assert {
        "train-toy-model",
        "acdc-circuit",
        "lrp-attribution",
        "steering",
        "report",
        "record",
    } <= commands
    # the jobs ran in forks of the run's warm process (circuitlab.warm), and still loaded only
    # the package modules of their own command
    assert all(t["warm"] for t in traces), [t["argv"][:2] for t in traces if not t["warm"]]
    for t in traces:
        argv = t["argv"]
        method = argv[argv.index("--method") + 1] if "--method" in argv else None
        fp = index.fingerprint(argv[0], plugins_for(argv[0], method))
        cli = set(index.cli_modules)
        loaded = {m for m in t["modules"] if m not in cli and not is_untracked(m)}
        missing = loaded - set(fp.modules)
        assert not missing, f"`circuitlab {' '.join(argv[:3])}` loaded {missing} unfingerprinted"


def dry_run_with(pipeline: Path, tmp: Path, module: str, edit: Callable[[str], str]) -> list[dict]:
    """The dry run of the finished pipeline with ``module`` edited in a copy of the package."""
    shutil.copytree(SRC / "circuitlab", tmp / "circuitlab")
    path = tmp / (module.replace(".", "/") + ".py")
    text = path.read_text()
    path.write_text(edit(text))
    assert path.read_text() != text
    env = snakemake_env(pipeline, PYTHONPATH=str(tmp))
    return planned_jobs(snakemake(pipeline, "--dry-run", env=env))


def own(jobs: list[dict]) -> list[tuple[str, str]]:
    return sorted((j["rule"], j["wildcards"]) for j in jobs if any(r in j["reason"] for r in OWN))


def test_editing_an_acdc_method_plans_that_methods_jobs_and_downstream(
    pipeline: Path, tmp_path: Path
) -> None:
    jobs = dry_run_with(pipeline, tmp_path, "circuitlab.acdc.fast", lambda t: t + "\n\nEXTRA = 1\n")
    mine = own(jobs)
    assert [r for r, _ in mine] == ["acdc_circuit", "acdc_circuit"], mine
    assert all("method=acdc" in w and "method=acdc_" not in w for _, w in mine), mine
    assert all("Params have changed" in j["reason"] for j in jobs if j["rule"] == "acdc_circuit")
    assert {j["rule"] for j in jobs} <= {"acdc_circuit", "acdc_evaluate", "report", "record", "all"}


def test_editing_lrp_selection_plans_the_lrp_circuit_not_its_attributions(
    pipeline: Path, tmp_path: Path
) -> None:
    jobs = dry_run_with(
        pipeline, tmp_path, "circuitlab.lrp.selection", lambda t: t + "\n\nEXTRA = 1\n"
    )
    rules = {j["rule"] for j in jobs}
    assert {r for r, _ in own(jobs)} == {"lrp_circuit", "lrp_faithfulness", "contrastive_circuit"}
    assert not rules & {"lrp_attribution", "acdc_circuit", "train_toy_model", "blacklist"}


def test_a_docstring_or_comment_edit_plans_nothing(pipeline: Path, tmp_path: Path) -> None:
    def cosmetic(text: str) -> str:
        return text.replace('"""', '"""Reworded. ', 1) + "\n# a trailing comment\n"

    assert dry_run_with(pipeline, tmp_path, "circuitlab.lrp.attribution", cosmetic) == []


def test_plan_names_the_changed_module_and_config_key(pipeline: Path, tmp_path: Path) -> None:
    shutil.copytree(SRC / "circuitlab", tmp_path / "circuitlab")
    fast = tmp_path / "circuitlab" / "acdc" / "eap.py"
    fast.write_text(fast.read_text() + "\n\nEXTRA = 1\n")
    config = pipeline / "config" / "config.yaml"
    before = config.read_bytes()
    stat = config.stat()
    config.write_text(config.read_text().replace("- 0.5\n", "- 0.6\n", 1))
    try:
        proc = subprocess.run(
            [str(BIN / "circuitlab"), "plan", "--jobs"],
            cwd=pipeline,
            env={**snakemake_env(pipeline), "PYTHONPATH": str(tmp_path), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        config.write_bytes(before)
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "code changed: acdc.eap" in out
    assert "config acdc.eap.sizes: [0.2, 0.5] → [0.2, 0.6]" in out
    assert "rebuilt upstream" in out  # acdc_evaluate follows the eap circuits


def test_plan_on_an_up_to_date_run_says_nothing_to_do(pipeline: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "circuitlab.cli", "plan"],
        cwd=pipeline,
        env=snakemake_env(pipeline),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout


def test_every_metrics_file_records_environment_and_code(pipeline: Path) -> None:
    files = sorted((pipeline / "data" / "metrics").rglob("*.json"))
    assert files
    for path in files:
        record = tracking.read_provenance(path)
        env = record["environment"]
        assert env["pinned"] is True, path
        assert env["commit"] and env["torch"], path
        assert record["code"]["digest"], path
    training = tracking.read_provenance(next(p for p in files if "train_toy_model" in str(p)))
    assert training["environment"]["cpu_capability"] == "AVX2"
    assert training["code"]["command"] == "train-toy-model"
