"""The whole Snakemake pipeline on a tiny config, in a temp copy of the workflow.

Checks what a user relies on: artifacts exist and validate, a W&B offline run holds the
logged metrics, a second run does nothing, and changing one task's parameter reruns only
that task's jobs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from circuitlab.acdc.artifact import load_circuit
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.tasks.io import load_rows
from pipeline_support import EDGE_METHODS, jobs_run, snakemake

# The `pipeline` fixture (one completed run of pipeline_support.TINY, shared by the session)
# is in tests/integration/conftest.py.


@pytest.mark.slow
def test_artifacts_exist_and_validate(pipeline: Path) -> None:
    for task in ("capitals", "induction", "refusal"):
        rows = load_rows(pipeline / "data" / "datasets" / f"{task}.jsonl")
        assert {r.split for r in rows} == {"train", "test"}
        checked = load_rows(pipeline / "data" / "datasets" / "tiny" / f"{task}.jsonl")
        assert len(checked) == len(rows)
        scores = json.loads(
            (pipeline / "data/metrics/evaluate_model/tiny" / f"{task}.json").read_text()
        )
        assert 0.0 <= scores["test"]["accuracy"] <= 1.0
    for task in ("capitals", "induction", "refusal"):
        circuit = NeuronCircuit.load(pipeline / "data/circuits/tiny" / task / "lrp.json")
        assert len(circuit) == 10 and circuit.task == task and circuit.n_layers == 1
        assert all(p < 0 and 0 <= n < 64 for _, p, n in circuit.neurons)
        report = json.loads(
            (pipeline / "data/metrics/lrp_faithfulness/tiny" / f"{task}.json").read_text()
        )
        curve = report["ablations"]["mean"]["curve"]
        assert [r["size"] for r in curve.values()] == [0.05, 0.5]
        assert (pipeline / "data/plots/lrp_faithfulness/tiny" / f"{task}.png").stat().st_size > 0
    for task in ("capitals", "induction"):  # edge circuits: tasks only, not behaviours
        for method in EDGE_METHODS:
            circuit = load_circuit(pipeline / "data/circuits/tiny" / task / f"{method}.json")
            assert circuit.method == method and circuit.n_prompts == 4
            assert len(circuit.edges) == 19  # 1 layer, 4 heads, 2 KV heads
            assert (pipeline / "data/circuits/tiny" / task / f"{method}.dot").exists()
        report = json.loads(
            (pipeline / "data/metrics/acdc_evaluate/tiny" / f"{task}.json").read_text()
        )
        assert set(report["methods"]) == set(EDGE_METHODS) and report["n_prompts"] == 4
        assert (pipeline / "data/plots/acdc_evaluate/tiny" / f"{task}.png").stat().st_size > 0
    assert not (pipeline / "data/circuits/tiny/refusal/eap.json").exists()
    contrastive = NeuronCircuit.load(pipeline / "data/circuits/tiny/refusal/contrastive.json")
    assert len(contrastive) == 10
    blacklist = json.loads((pipeline / "data/blacklists/tiny.json").read_text())
    assert blacklist["n_prompts"] >= 20
    model_dir = pipeline / "data" / "models" / "tiny"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    train = json.loads((pipeline / "data/metrics/train_toy_model/tiny.json").read_text())
    assert train["final_loss"] > 0
    curve = json.loads((pipeline / "data/plots/train_toy_model/tiny.json").read_text())
    assert [p["step"] for p in curve] == [5, 10, 15, 20]


@pytest.mark.slow
def test_wandb_offline_runs_share_one_group(pipeline: Path) -> None:
    runs = sorted((pipeline / "logs" / "wandb").glob("offline-run-*"))
    # one W&B run per job that reports metrics, and each such job writes exactly one metrics
    # JSON through the same door (rule all and the report log none), plus the run's record
    metrics_files = sorted((pipeline / "data" / "metrics").rglob("*.json"))
    assert len(metrics_files) >= 18 + 2 * len(EDGE_METHODS) + 2
    assert len(runs) == len(metrics_files) + 1, ([r.name for r in runs], metrics_files)
    blobs = [next(r.glob("run-*.wandb")).read_bytes() for r in runs]
    groups = {m.group(0) for b in blobs for m in re.finditer(rb"run-\d{8}-\d{6}", b)}
    assert len(groups) == 1, groups
    train_run = next(b for b in blobs if b"train_toy_model" in b)
    assert b"final_loss" in train_run


@pytest.mark.slow
def test_the_run_ends_with_one_complete_record(pipeline: Path) -> None:
    """The last job logs one W&B run holding every metric of every metrics file, the resolved
    config, the commit, the md5 of each summarised file and the report page."""
    import hashlib

    from circuitlab.tracking import flatten, read_metrics
    from circuitlab.tracking.record import record_key
    from wandb_support import read_run

    runs = [read_run(f) for f in (pipeline / "logs" / "wandb").glob("offline-run-*/run-*.wandb")]
    records = [r for r in runs if r["name"] == "record"]
    assert len(records) == 1 and records[0]["group"] == runs[0]["group"]
    record = records[0]
    metrics_files = sorted((pipeline / "data" / "metrics").rglob("*.json"))
    expected = {record_key(f.relative_to(pipeline)): read_metrics(f) for f in metrics_files}
    assert read_metrics(pipeline / "data" / "report" / "record.json") == expected
    flat = flatten("record", expected)
    assert {k: v for k, v in record["summary"].items() if not k.startswith("_")} == flat
    resolved = yaml.safe_load((pipeline / "config" / "resolved.yaml").read_text())
    assert record["config"]["config"] == resolved
    md5 = record["config"]["inputs_md5"]
    assert len(md5) == len(metrics_files) + 1 and "data/report/index.html" in md5
    assert all(hashlib.md5((pipeline / p).read_bytes()).hexdigest() == h for p, h in md5.items())
    assert record["config"]["provenance"]["made_by"] == "circuitlab record"
    page = list((pipeline / "logs" / "wandb").glob("offline-run-*/files/index.html"))
    assert [p.read_bytes() for p in page] == [(pipeline / "data/report/index.html").read_bytes()]


@pytest.mark.slow
def test_second_run_does_nothing(pipeline: Path) -> None:
    assert jobs_run(snakemake(pipeline)) == {}


@pytest.mark.slow
def test_changing_one_task_reruns_only_that_task(pipeline: Path) -> None:
    """The plan after one task's `n_test` changes holds that task's jobs and what reads them,
    nothing else (Snakemake's dry run: the jobs a run would execute); the dataset job of that
    plan really writes the new split; restoring the config restores the run (the shared run is
    left up to date, and an identical rewritten dataset reruns nothing downstream)."""
    config = pipeline / "config" / "config.yaml"
    original = config.read_text()
    rows = pipeline / "data" / "datasets" / "capitals.jsonl"
    cfg = yaml.safe_load(original)
    cfg["tasks"]["capitals"]["n_test"] = 5
    try:
        config.write_text(yaml.safe_dump(cfg))
        plan = snakemake(pipeline, "--dry-run")
        assert jobs_run(plan) == {
            "datasets": 1,
            "check_dataset": 1,
            "evaluate_model": 1,
            "lrp_attribution": 1,
            "lrp_circuit": 1,
            "lrp_faithfulness": 1,
            "acdc_circuit": len(EDGE_METHODS),
            "acdc_evaluate": 1,
            # steering measures side effects on every task's test split (the leakage matrix),
            # so each steering job and the summary and report downstream of them rerun too
            "steering": 4,
            "caa_steering": 1,
            "steering_summary": 1,
            "report": 1,
            "record": 1,
            "all": 1,
        }
        assert "capitals" in plan.stdout + plan.stderr
        assert jobs_run(snakemake(pipeline, str(rows.relative_to(pipeline)))) == {"datasets": 1}
        assert len(load_rows(rows, split="test")) == 5
    finally:
        config.write_text(original)
        # the dataset alone first: Snakemake plans every job downstream of a job it reruns in
        # the same invocation, so restoring it by a full run would rerun its readers
        snakemake(pipeline, str(rows.relative_to(pipeline)))
    # rewritten as it was, the dataset reruns nothing that reads it; the report reads the
    # job's benchmark file (its wall time), so it is redrawn
    assert jobs_run(snakemake(pipeline)) == {"report": 1, "record": 1, "all": 1}
    assert jobs_run(snakemake(pipeline, "--dry-run")) == {}


@pytest.mark.slow
def test_results_tables_come_from_the_run(pipeline: Path, tmp_path: Path) -> None:
    """`circuitlab results` writes each table from the run's metrics, stamped with the model's
    weights and the commit in the metrics' provenance."""
    import hashlib

    from circuitlab.io import read_json
    from circuitlab.report.results import num
    from cli_support import run

    out = tmp_path / "RESULTS.md"
    ran = run("results", "--data", pipeline / "data", "--out", out)
    assert ran.returncode == 0, ran.stderr
    text = out.read_text()
    evaluation = pipeline / "data" / "metrics" / "evaluate_model" / "tiny" / "capitals.json"
    test = read_json(evaluation)["test"]
    row = f"| capitals | {num(test['accuracy'])} | {num(test['logit_diff'])} | {num(test['n'])} |"
    assert row in text
    weights = (pipeline / "data" / "models" / "tiny" / "model.safetensors").read_bytes()
    assert f"weights sha256 `{hashlib.sha256(weights).hexdigest()[:12]}`" in text
    commit = read_json(evaluation)["provenance"]["environment"]["commit"]
    assert (f"`{commit[:7]}" if commit else "commit unknown") in text
    titles = ["Task accuracy", "LRP neuron circuits", "LRP calibration", "Edge circuits",
              "Steering", "CAA vs circuit"]  # fmt: skip
    assert all(f"### {t}" in text for t in titles), text[:2000]
    empty = run("results", "--data", tmp_path / "nothing", "--out", tmp_path / "R.md")
    assert empty.returncode == 2 and "make reproduce" in empty.stderr
    # one model of a run: the same tables; a model the run lacks is named
    only = run(
        "results", "--data", pipeline / "data", "--model", "tiny", "--out", tmp_path / "1.md"
    )
    assert only.returncode == 0 and (tmp_path / "1.md").read_text() == text
    other = run(
        "results", "--data", pipeline / "data", "--model", "toy", "--out", tmp_path / "2.md"
    )
    assert other.returncode == 2 and "no evaluation of model(s) toy; it has: tiny" in other.stderr


@pytest.mark.slow
def test_every_artifact_reads_back_through_its_model_to_the_same_bytes(
    pipeline: Path, tmp_path: Path
) -> None:
    """Each JSON artifact of the run is written through its typed model: reading it back and
    writing it again gives the file's own bytes."""
    from circuitlab.acdc.artifact import CircuitFile
    from circuitlab.blacklist.artifact import BlacklistFile
    from circuitlab.compare.artifact import CompareReport
    from circuitlab.io import read_json, write_json
    from circuitlab.lrp.circuit import NeuronCircuitFile
    from circuitlab.steering.artifact import SteeringReport

    data = pipeline / "data"
    neuron = ("lrp.json", "contrastive.json")
    kinds = {
        SteeringReport: sorted((data / "steering").rglob("*.json")),
        CompareReport: sorted((data / "compare").rglob("*.json")),
        NeuronCircuitFile: sorted((data / "circuits").rglob("lrp.json"))
        + sorted((data / "circuits").rglob("contrastive.json")),
        BlacklistFile: sorted((data / "blacklists").glob("*.json")),
        CircuitFile: sorted(p for p in (data / "circuits").rglob("*.json") if p.name not in neuron),
    }
    for kind, paths in kinds.items():
        assert paths, kind.__name__
        for path in paths:
            again = write_json(tmp_path / "again.json", kind.load(path).to_json())
            assert again.read_bytes() == path.read_bytes(), path
            assert read_json(path)["format"] == kind.FORMAT
    assert len(kinds[CircuitFile]) == 2 * len(EDGE_METHODS)


def test_every_metrics_file_fits_its_model(pipeline: Path) -> None:
    """Every metrics file of the run loads through its stage's typed model, and the model keeps
    every number of the file (nothing the stage wrote is dropped). The steering and CAA-vs-circuit
    metrics are views of their typed reports (data/steering/…, data/compare/…: read back in
    the test above) and have no model of their own."""
    from circuitlab.acdc.scores import DiscoveryMetrics, EdgeEvaluation
    from circuitlab.blacklist.metrics import BlacklistMetrics
    from circuitlab.io import read_json
    from circuitlab.lrp.metrics import (
        ContrastiveMetrics,
        FaithfulnessMetrics,
        LrpAttributionMetrics,
        LrpCircuitMetrics,
    )
    from circuitlab.models.metrics import EvaluationMetrics, TrainingMetrics
    from circuitlab.steering.artifact import CaaSelection, SteeringSummary
    from circuitlab.tasks.metrics import DatasetMetrics, TokenCheckMetrics

    metrics = pipeline / "data" / "metrics"
    kinds = {
        "datasets": DatasetMetrics, "check_dataset": TokenCheckMetrics,
        "train_toy_model": TrainingMetrics, "evaluate_model": EvaluationMetrics,
        "blacklist": BlacklistMetrics, "lrp_attribution": LrpAttributionMetrics,
        "lrp_circuit": LrpCircuitMetrics, "lrp_faithfulness": FaithfulnessMetrics,
        "contrastive_circuit": ContrastiveMetrics, "acdc_circuit": DiscoveryMetrics,
        "acdc_evaluate": EdgeEvaluation, "caa": CaaSelection,
    }  # fmt: skip
    seen = set()
    for path in sorted(metrics.rglob("*.json")):
        rule = path.relative_to(metrics).parts[0]
        if rule == "steering" and path.name == "summary.json":
            kind = SteeringSummary
        elif rule in ("steering", "compare"):
            continue  # views of typed reports
        else:
            kind = kinds[rule]
        model = kind.load(path)
        assert model.model_dump(mode="json", exclude_unset=True) == read_json(path), path
        seen.add(kind)
    assert seen == {*kinds.values(), SteeringSummary}


@pytest.mark.slow
def test_dvc_metrics_show_fits_a_terminal(pipeline: Path, tmp_path: Path) -> None:
    """DVC's metrics are the stages' headlines (data/summary/): the whole `dvc metrics show`
    stays small and each stage folder's table within 250 characters, results only; every
    headline path of `circuitlab.tracking.headline` is found in some file of the run."""
    import os
    import shutil
    import subprocess
    import sys

    from circuitlab.config import load_config
    from circuitlab.jobs import pipeline_jobs
    from circuitlab.tracking.headline import HEADLINES

    dvc = [str(Path(sys.executable).parent / "dvc")]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    shutil.copytree(pipeline / "data" / "summary", tmp_path / "data" / "summary")
    shutil.copy(Path(__file__).resolve().parents[2] / "dvc.yaml", tmp_path / "dvc.yaml")

    def dvc_run(*args: str) -> str:
        proc = subprocess.run(
            [*dvc, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    dvc_run("init", "--no-scm", "-q")
    whole = dvc_run("metrics", "show")
    assert 0 < len(whole.encode()) <= 200_000
    stages = sorted(p.name for p in (tmp_path / "data" / "summary").iterdir())
    # one folder per rule of the run's job graph that writes metrics (the steering rules share one)
    config = yaml.safe_load((pipeline / "config" / "config.yaml").read_text())
    shared = {"caa_steering": "steering", "steering_summary": "steering"}
    rules = {j.rule for j in pipeline_jobs(load_config(config))} - {"report", "record"}
    assert set(stages) == {shared.get(rule, rule) for rule in rules}
    widths = {}
    for stage in stages:
        table = dvc_run("metrics", "show", f"data/summary/{stage}")
        assert "provenance" not in table
        widths[stage] = max(len(line) for line in table.splitlines())
    assert max(widths.values()) <= 250, widths
    found = set()
    for path in (pipeline / "data" / "summary").rglob("*.json"):
        found |= set(json.loads(path.read_text()))
    for stage, columns in HEADLINES.items():
        if stage not in rules:  # robustness: not in this run (test_report checks its summary)
            continue
        for column in columns:
            if "{}" not in column:
                assert column in found, f"{stage}: {column} is in no summary of the run"
