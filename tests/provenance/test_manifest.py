"""Artifacts changed by hand are found and rebuilt: a pipeline job records what it wrote; a
later edit is listed (dry runs, `make plan`) and set aside by a run (kept, never deleted), so
Snakemake rebuilds it; `make accept` records what is on disk as current."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitlab.provenance.manifest import EDITED, accept, altered, record_outputs, set_aside
from cli_support import run


def test_edited_and_deleted_outputs_are_found_set_aside_and_accepted(tmp_path: Path) -> None:
    rows = tmp_path / "data" / "datasets" / "ioi.jsonl"
    model = tmp_path / "data" / "models" / "toy"
    rows.parent.mkdir(parents=True)
    model.mkdir(parents=True)
    rows.write_text('{"id": 1}\n')
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    other = tmp_path / "data" / "metrics" / "m.json"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    record_outputs([rows, model, other], root=tmp_path)
    assert altered(tmp_path) == []

    rows.write_text('{"id": 2}\n')  # edited by hand
    (model / "config.json").unlink()  # deleted inside a directory output
    other.unlink()  # a deleted declared output: Snakemake reruns its job by itself
    found = {(c.path, c.why) for c in altered(tmp_path)}
    assert found == {
        ("data/datasets/ioi.jsonl", "edited"),
        ("data/models/toy/config.json", "deleted"),
    }

    moved = set_aside(altered(tmp_path), tmp_path)
    assert sorted(moved) == ["data/datasets/ioi.jsonl", "data/models/toy/model.safetensors"]
    assert not rows.exists() and not (model / "model.safetensors").exists()  # Snakemake rebuilds
    kept = list((tmp_path / EDITED).rglob("ioi.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == '{"id": 2}\n'  # the edit is kept

    rows.write_text('{"id": 3}\n')  # e.g. `dvc checkout` of another version
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    assert accept(tmp_path) == 2 and altered(tmp_path) == []  # `make accept`


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
