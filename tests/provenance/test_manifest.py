"""Artifacts changed by hand are found: a pipeline job records what it wrote, and a later
edit or deletion names the file and what to rebuild (`make reproduce` passes it to
--forcerun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.provenance.manifest import altered, forcerun_targets, record_outputs


def test_edited_and_deleted_outputs_are_found(tmp_path: Path) -> None:
    rows = tmp_path / "data" / "datasets" / "ioi.jsonl"
    model = tmp_path / "data" / "models" / "toy"
    rows.parent.mkdir(parents=True)
    model.mkdir(parents=True)
    rows.write_text('{"id": 1}\n')
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    record_outputs([rows, model], root=tmp_path)
    assert altered(tmp_path) == []

    rows.write_text('{"id": 2}\n')  # edited by hand
    (model / "config.json").unlink()  # deleted inside a directory output
    other = tmp_path / "data" / "metrics" / "m.json"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    record_outputs([other], root=tmp_path)
    other.unlink()  # a deleted declared output: Snakemake reruns its job by itself
    found = {(c.path, c.why, c.target) for c in altered(tmp_path)}
    assert found == {
        ("data/datasets/ioi.jsonl", "edited", "data/datasets/ioi.jsonl"),
        ("data/models/toy/config.json", "deleted", "data/models/toy/model.safetensors"),
    }
    assert forcerun_targets(altered(tmp_path)) == [
        "data/datasets/ioi.jsonl", "data/models/toy/model.safetensors",
    ]  # fmt: skip
    record_outputs([rows, model], root=tmp_path)  # the job ran again: nothing altered
    assert altered(tmp_path) == []


def test_only_pipeline_jobs_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIRCUITLAB_ROOT", raising=False)
    out = tmp_path / "x.json"
    out.write_text("{}")
    record_outputs([out])
    assert not (tmp_path / ".snakemake").exists()


def test_cli_records_its_outputs_and_lists_changes(tmp_path: Path) -> None:
    env = {**os.environ, "CIRCUITLAB_ROOT": str(tmp_path), "WANDB_MODE": "disabled"}
    out = tmp_path / "data" / "datasets" / "sva.jsonl"
    cmd = [sys.executable, "-m", "circuitlab.cli"]
    subprocess.run(
        [*cmd, "datasets", "--task", "sva", "--out", str(out),
         "--metrics", str(tmp_path / "data" / "metrics" / "datasets" / "sva.json")],
        cwd=tmp_path, env=env, check=True, capture_output=True,
    )  # fmt: skip
    clean = subprocess.run([*cmd, "altered", "--forcerun"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert clean.stdout == "" and clean.stderr == ""
    out.write_text(out.read_text().replace('"train"', '"test"', 1))
    changed = subprocess.run([*cmd, "altered", "--forcerun"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert changed.stdout.strip() == "--forcerun data/datasets/sva.jsonl"
    assert "edited since its job wrote it: data/datasets/sva.jsonl" in changed.stderr
