"""The CLI as Snakemake calls it: artifacts on success, clear errors and nothing written on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.tasks.io import load_rows

CLI = [sys.executable, "-m", "circuitlab.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env_extra = {"WANDB_MODE": "disabled"}
    import os

    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env_extra}
    )


def test_datasets_writes_rows_and_metrics(tmp_path: Path) -> None:
    out, metrics = tmp_path / "d" / "sva.jsonl", tmp_path / "m" / "sva.json"
    proc = run(
        "datasets",
        "--task",
        "sva",
        "--params",
        '{"n_train": 5, "n_test": 3}',
        "--out",
        str(out),
        "--metrics",
        str(metrics),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = load_rows(out)
    assert sum(r.split == "train" for r in rows) == 5
    assert json.loads(metrics.read_text()) == {"n_rows": 8, "n_test": 3, "n_train": 5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "capitols"], "unknown task 'capitols'; choose one of: capitals"),
        (["--task", "sva", "--params", "{bad"], "--params is not valid JSON"),
        (["--task", "sva", "--params", "[1]"], "--params must be a JSON object"),
        (["--task", "sva", "--params", '{"n_tran": 3}'], "n_tran"),
        (["--task", "sva", "--params", '{"n_train": 0}'], "n_train"),
    ],
)
def test_datasets_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "x.jsonl"
    proc = run(
        "datasets", *args, "--out", str(out), "--metrics", str(tmp_path / "m.json"), cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "m.json").exists()


def test_stage_without_its_input_names_the_rule(tmp_path: Path) -> None:
    proc = run(
        "check-dataset",
        "--model",
        str(tmp_path / "models" / "toy"),
        "--data",
        str(tmp_path / "missing.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--metrics",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "made by the Snakemake rule 'datasets'" in proc.stderr
    rows = tmp_path / "rows.jsonl"
    run(
        "datasets",
        "--task",
        "sva",
        "--params",
        '{"n_train": 2, "n_test": 2}',
        "--out",
        str(rows),
        "--metrics",
        str(tmp_path / "dm.json"),
        cwd=tmp_path,
    )
    proc = run(
        "check-dataset",
        "--model",
        str(tmp_path / "models" / "toy"),
        "--data",
        str(rows),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--metrics",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "made by the Snakemake rule 'train_toy_model'" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_malformed_dataset_lists_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    row = {
        "id": "a",
        "split": "train",
        "prompt": "p",
        "target": " x",
        "counterfactual": " x",
        "corrupt_prompt": "q",
        "meta": {},
    }
    bad.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "b", "split": "dev"}) + "\n")
    proc = run(
        "check-dataset",
        "--model",
        str(tmp_path),
        "--data",
        str(bad),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--metrics",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "2 invalid row(s)" in proc.stderr
    assert "id='a'" in proc.stderr and "both ' x'" in proc.stderr
    assert "id='b'" in proc.stderr and "split" in proc.stderr
