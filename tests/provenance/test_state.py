"""A snapshot's state (data/state/): saved by `make snapshot`, restored for the outputs that
are the snapshot's, never for an edit or for a newer run's files."""

from __future__ import annotations

import json
import os
import shutil
from base64 import urlsafe_b64encode
from pathlib import Path

from circuitlab.provenance.manifest import RECORDS, altered, record_outputs
from circuitlab.provenance.state import METADATA, STATE, restore_state, save_state

OUTPUT = "data/metrics/a/x.json"
BENCH = "data/benchmarks/a/x.tsv"


def _job(root: Path, text: str, when: int) -> None:
    """What a pipeline job leaves: its output (recorded) with Snakemake's metadata, and its
    benchmark TSV (no record), all written at `when`."""
    for rel, body in ((OUTPUT, text), (BENCH, f"s\n{when}\n")):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        os.utime(path, (when, when))
    record_outputs([root / OUTPUT], root=root)
    meta = root / METADATA / urlsafe_b64encode(OUTPUT.encode()).decode()
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"rule": "a", "params": [text], "endtime": when}))


def _checkout(src: Path, dest: Path) -> Path:
    """data/ as `dvc pull` leaves it in a fresh clone: the bytes, new modification times, no
    .snakemake/."""
    shutil.copytree(src / "data", dest / "data", copy_function=shutil.copyfile)
    return dest


def test_a_fresh_clone_adopts_the_snapshots_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    saved = save_state(run)
    assert (saved.outputs, saved.metadata, saved.skipped) == (1, 1, ())
    assert saved.files == 2  # the output and the benchmark TSV (not data/state itself)

    clone = _checkout(run, tmp_path / "clone")
    assert (clone / OUTPUT).stat().st_mtime != 1_000_000
    assert restore_state(clone) == [OUTPUT]
    assert altered(clone) == []  # the guard sees the files as their job wrote them
    for rel in (OUTPUT, BENCH):  # and Snakemake sees the times the run left
        assert (clone / rel).stat().st_mtime == 1_000_000
    meta = list((clone / METADATA).iterdir())
    assert [json.loads(m.read_text())["params"] for m in meta] == [['{"v": 1}']]
    assert restore_state(clone) == []  # once adopted, nothing more to do


def test_an_edit_after_the_checkout_is_left_to_the_guard(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    save_state(run)
    clone = _checkout(run, tmp_path / "clone")
    (clone / OUTPUT).write_text('{"v": 666}')
    assert restore_state(clone) == []
    assert [(c.path, c.why) for c in altered(clone)] == [(OUTPUT, "edited")]  # rebuilt
    assert not (clone / METADATA).exists()


def test_a_newer_run_keeps_its_own_state_and_an_older_checkout_gets_the_snapshots(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    save_state(run)
    old = {p: (run / p).read_bytes() for p in (OUTPUT, BENCH)}
    _job(run, '{"v": 2}', 2_000_000)  # a later run rewrote the output
    live = {p.name: p.read_text() for p in (run / RECORDS).iterdir()}
    assert restore_state(run) == []  # the files are the live run's, not the snapshot's
    assert {p.name: p.read_text() for p in (run / RECORDS).iterdir()} == live
    assert (run / OUTPUT).stat().st_mtime == 2_000_000

    for rel, body in old.items():  # `git checkout <snapshot> && dvc checkout`
        (run / rel).write_bytes(body)
    assert restore_state(run) == [OUTPUT]
    assert altered(run) == []
    assert (run / OUTPUT).stat().st_mtime == (run / BENCH).stat().st_mtime == 1_000_000
    meta = next((run / METADATA).iterdir())
    assert json.loads(meta.read_text())["params"] == ['{"v": 1}']


def test_an_output_edited_before_the_snapshot_is_left_out_of_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _job(run, '{"v": 1}', 1_000_000)
    (run / OUTPUT).write_text('{"v": 9}')
    saved = save_state(run)
    assert saved.skipped == (OUTPUT,) and saved.outputs == 0
    assert not list((run / STATE).glob("records/*"))
