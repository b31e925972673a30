"""A snapshot's state (data/state/): saved by `make snapshot`, restored for the outputs that
are the snapshot's, never over an edit or a newer job's own state."""

from __future__ import annotations

import json
import os
import shutil
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from circuitlab.errors import CircuitlabError
from circuitlab.provenance.manifest import RECORDS, altered, record_outputs
from circuitlab.provenance.state import METADATA, STATE, restore_state, save_state

OUTPUT = "data/metrics/a/x.json"
BENCH = "data/benchmarks/a/x.tsv"


def _job(root: Path, text: str, when: int, code: str = "c1") -> None:
    """What a pipeline job leaves: its output (recorded) with Snakemake's metadata, and its
    benchmark TSV (no record), all written at `when`."""
    for rel, body in ((OUTPUT, text), (BENCH, f"s\n{when}\n")):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        os.utime(path, (when, when))
    record_outputs([root / OUTPUT], root=root)
    _metadata(root).parent.mkdir(parents=True, exist_ok=True)
    _metadata(root).write_text(json.dumps({"rule": "a", "params": [text, code]}))


def _metadata(root: Path) -> Path:
    return root / METADATA / urlsafe_b64encode(OUTPUT.encode()).decode()


def _snapshot(root: Path) -> dict[str, bytes]:
    """`make snapshot`: the state, then `dvc add` (which leaves data/state.dvc); what DVC
    would store of data/."""
    saved = save_state(root)
    (root / "data" / "state.dvc").write_text("outs: [{path: state}]\n")
    assert saved.outputs + len(saved.skipped) == 1
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in (root / "data").rglob("*")
        if p.is_file()
    }


def _checkout(root: Path, files: dict[str, bytes]) -> None:
    """`dvc checkout`/`dvc pull`: every stored file with these bytes, written now."""
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != body:
            path.write_bytes(body)


def test_a_fresh_clone_adopts_the_snapshots_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    stored = _snapshot(run)
    clone = tmp_path / "clone"
    _checkout(clone, stored)
    assert (clone / OUTPUT).stat().st_mtime != 1_000_000
    assert restore_state(clone) == [OUTPUT]
    assert altered(clone) == []  # the guard sees the files as their job wrote them
    for rel in (OUTPUT, BENCH):  # and Snakemake the times the run left
        assert (clone / rel).stat().st_mtime == 1_000_000
    assert json.loads(_metadata(clone).read_text())["params"] == ['{"v": 1}', "c1"]
    assert restore_state(clone) == []  # once adopted, nothing more to do


def test_an_edit_after_the_checkout_is_left_to_the_guard(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    clone = tmp_path / "clone"
    _checkout(clone, _snapshot(run))
    (clone / OUTPUT).write_text('{"v": 666}')
    assert restore_state(clone) == []
    assert [(c.path, c.why) for c in altered(clone)] == [(OUTPUT, "edited")]  # rebuilt
    assert not (clone / METADATA).exists()


def test_an_output_edited_before_the_snapshot_is_rebuilt_in_the_clone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    (run / OUTPUT).write_text('{"v": 9}')  # edited by hand, then snapshotted
    stored = _snapshot(run)
    assert not list((run / STATE / "metadata").glob("*"))
    clone = tmp_path / "clone"
    _checkout(clone, stored)
    assert restore_state(clone) == []
    assert [(c.path, c.why) for c in altered(clone)] == [(OUTPUT, "edited")]


def test_checkouts_between_two_snapshots_adopt_each_ones_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    first = _snapshot(run)
    _job(run, '{"v": 2}', 2_000_000)  # a later run rewrote the output
    live = {p.name: p.read_text() for p in (run / RECORDS).iterdir()}
    assert restore_state(run) == []  # the files are the live run's, not the snapshot's
    assert {p.name: p.read_text() for p in (run / RECORDS).iterdir()} == live
    assert (run / OUTPUT).stat().st_mtime == 2_000_000
    second = _snapshot(run)

    _checkout(run, first)  # `git checkout <first> && dvc checkout`
    assert restore_state(run) == [OUTPUT]
    assert altered(run) == []
    assert (run / OUTPUT).stat().st_mtime == (run / BENCH).stat().st_mtime == 1_000_000
    assert json.loads(_metadata(run).read_text())["params"] == ['{"v": 1}', "c1"]
    _checkout(run, second)
    assert restore_state(run) == [OUTPUT]
    assert (run / OUTPUT).stat().st_mtime == 2_000_000


def test_bytes_two_snapshots_share_get_the_checked_out_ones_code(tmp_path: Path) -> None:
    """A refactor (new code fingerprint) reran a job with the same bytes: each snapshot's
    metadata names its own code, and a checkout restores the one that matches its code."""
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000, code="c1")
    first = _snapshot(run)
    _job(run, '{"v": 1}', 2_000_000, code="c2")
    second = _snapshot(run)
    restore_state(run)
    _checkout(run, first)  # nothing but data/state differs on disk
    assert restore_state(run) == [OUTPUT]
    assert json.loads(_metadata(run).read_text())["params"] == ['{"v": 1}', "c1"]
    _checkout(run, second)
    restore_state(run)
    assert json.loads(_metadata(run).read_text())["params"] == ['{"v": 1}', "c2"]


def test_a_job_rerun_with_the_same_bytes_keeps_its_own_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000, code="c1")
    _snapshot(run)
    restore_state(run)  # the workspace has seen its snapshot
    _job(run, '{"v": 1}', 3_000_000, code="c2")  # same bytes, newer code
    assert restore_state(run) == []
    assert (run / OUTPUT).stat().st_mtime == 3_000_000
    assert json.loads(_metadata(run).read_text())["params"] == ['{"v": 1}', "c2"]


def test_a_pull_completed_later_is_adopted_then(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    stored = _snapshot(run)
    clone = tmp_path / "clone"
    _checkout(clone, {k: v for k, v in stored.items() if k != OUTPUT})  # pull stopped short
    assert restore_state(clone) == []
    assert [(c.path, c.why) for c in altered(clone)] == [(OUTPUT, "deleted")]  # rebuilt…
    _checkout(clone, stored)  # … or pulled again before any run
    assert restore_state(clone) == [OUTPUT]
    assert (clone / OUTPUT).stat().st_mtime == 1_000_000 and altered(clone) == []


def test_a_state_the_checkout_does_not_track_is_ignored(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    stored = _snapshot(run)
    clone = tmp_path / "clone"
    _checkout(clone, stored)
    (clone / "data" / "state.dvc").unlink()  # a commit from before snapshots carried a state
    assert restore_state(clone) == []
    with pytest.raises(CircuitlabError, match="nothing to snapshot"):
        save_state(tmp_path / "empty")
    shutil.rmtree(clone)
