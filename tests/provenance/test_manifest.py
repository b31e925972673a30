"""Artifacts changed by hand are found and repaired: a pipeline job records what it wrote; a
later edit or deletion is found, forced in the next run if a job of its graph writes it (named
and left alone if not), the edit copied aside first (never moved, never lost); `make accept`
records what is on disk as current."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitlab.provenance.manifest import (
    EDITED,
    Altered,
    accept,
    altered,
    keep_edits,
    record_outputs,
    repairs,
)
from cli_support import run


def test_edited_and_deleted_outputs_are_found_forced_kept_and_accepted(tmp_path: Path) -> None:
    rows = tmp_path / "data" / "datasets" / "ioi.jsonl"
    model = tmp_path / "data" / "models" / "toy"
    rows.parent.mkdir(parents=True)
    model.mkdir(parents=True)
    rows.write_text('{"id": 1}\n')
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "tokenizer.json").write_text("{}")
    other = tmp_path / "data" / "metrics" / "m.json"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    record_outputs([rows, model, other], root=tmp_path)
    assert altered(tmp_path) == []

    rows.write_text('{"id": 2}\n')  # edited by hand
    (model / "tokenizer.json").unlink()  # deleted inside the model directory
    other.unlink()  # a deleted output
    found = altered(tmp_path)
    assert {(c.path, c.why) for c in found} == {
        ("data/datasets/ioi.jsonl", "edited"),
        ("data/models/toy/tokenizer.json", "deleted"),
        ("data/metrics/m.json", "deleted"),
    }

    graph = ["data/datasets/ioi.jsonl", "data/models/toy/tokenizer.json", "data/x.json"]
    plan = repairs(found, graph)
    assert {c.path for c in plan.forced} == {
        "data/datasets/ioi.jsonl",
        "data/models/toy/tokenizer.json",
    }
    assert [c.path for c in plan.outside] == ["data/metrics/m.json"]  # no job writes it now

    kept = keep_edits(plan.forced, tmp_path)
    assert [k.relative_to(tmp_path / EDITED).parts[1:] for k in kept] == [
        ("data", "datasets", "ioi.jsonl")
    ]
    assert kept[0].read_text() == '{"id": 2}\n'  # the edit is kept …
    assert rows.read_text() == '{"id": 2}\n'  # … and nothing moved: its job replaces it
    assert (model / "model.safetensors").read_bytes() == b"weights"  # the weights stay put
    assert keep_edits(plan.forced, tmp_path) == kept  # the same edit is kept once
    assert len([p for p in (tmp_path / EDITED).rglob("*") if p.is_file()]) == 1

    rows.write_text('{"id": 3}\n')  # e.g. `dvc checkout` of another version
    (model / "tokenizer.json").write_text("{}")
    assert accept(tmp_path) == 2 and altered(tmp_path) == []  # `make accept`


def test_repairs_match_paths_as_written(tmp_path: Path) -> None:
    changes = [Altered("data/a.json", "edited")]
    assert repairs(changes, ["./data/a.json"]).forced == tuple(changes)


def test_only_pipeline_jobs_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIRCUITLAB_RECORD", raising=False)
    out = tmp_path / "x.json"
    out.write_text("{}")
    record_outputs([out])
    assert not (tmp_path / ".snakemake").exists()


def test_a_damaged_record_never_stops_a_run(tmp_path: Path) -> None:
    folder = tmp_path / ".snakemake" / "circuitlab" / "outputs"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("{not json")
    (folder / "b.json").write_text('{"files": 3}')
    assert altered(tmp_path) == []


def test_cli_records_its_outputs_and_lists_changes(tmp_path: Path) -> None:
    env = {"CIRCUITLAB_RECORD": str(tmp_path)}
    out = tmp_path / "data" / "datasets" / "sva.jsonl"
    made = run(
        "datasets", "--task", "sva", "--out", out,
        "--metrics", tmp_path / "data" / "metrics" / "datasets" / "sva.json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    clean = run("altered", cwd=tmp_path, env=env)
    assert clean.returncode == 0 and clean.stdout == ""
    out.write_text(out.read_text().replace('"train"', '"test"', 1))
    changed = run("altered", cwd=tmp_path, env=env)
    assert changed.stdout.strip() == "edited since its job wrote it: data/datasets/sva.jsonl"


def test_clean_results_keeps_the_edits_a_run_copied_aside_and_the_history(tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    kept = tmp_path / EDITED / "0123456789ab" / "data" / "datasets" / "a.jsonl"
    records = tmp_path / ".snakemake" / "circuitlab" / "outputs" / "r.json"
    metadata = tmp_path / ".snakemake" / "metadata" / "x"
    wandb_run = tmp_path / "logs" / "wandb" / "offline-run-1" / "run-1.wandb"
    copy = tmp_path / "data" / "wandb" / "offline-run-1" / "run-1.wandb"
    results = [tmp_path / "data" / d / "f" for d in ("metrics", "circuits", "state", "caa")]
    job_log = tmp_path / "logs" / "acdc_circuit" / "a.log"
    for path in (kept, records, metadata, wandb_run, copy, job_log, *results):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")

    def make(target: str, answer: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "-f", str(root / "Makefile"), target],
            cwd=tmp_path, input=answer, capture_output=True, text=True,
            env={**os.environ, **env},
        )  # fmt: skip

    assert make("clean-results").returncode == 0
    assert kept.read_text() == "x" and wandb_run.read_text() == "x" and copy.read_text() == "x"
    assert not records.exists() and not metadata.exists() and not job_log.exists()
    assert not any(p.parent.exists() for p in results)
    # the history goes only when the user says so
    refused = make("clean-history", "n\n")
    assert refused.returncode != 0 and "delete 1 offline W&B runs" in refused.stdout
    assert wandb_run.exists()
    assert make("clean-history", "y\n").returncode == 0 and not wandb_run.exists()
    wandb_run.parent.mkdir(parents=True)
    wandb_run.write_text("x")
    assert make("clean-history", YES="1").returncode == 0 and not wandb_run.exists()
