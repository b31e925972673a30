"""Atomic artifact writes: a failure leaves neither a half-written file nor a temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitlab.errors import ArtifactError
from circuitlab.io import atomic_path, read_json, read_jsonl, write_json, write_jsonl


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed")
    assert read_json(target) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_directory_artifact_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_json_is_deterministic_and_errors_are_clear(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"b": 1, "a": [1, 2]})
    write_json(b, {"a": [1, 2], "b": 1})
    assert a.read_bytes() == b.read_bytes()
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="rule 'datasets'"):
        read_jsonl(tmp_path / "missing.jsonl", rule="datasets")
    write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, {"a": 2}])
    assert read_jsonl(tmp_path / "r.jsonl") == [{"a": 1}, {"a": 2}]
    (tmp_path / "r2.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ArtifactError, match=r"r2\.jsonl:2"):
        read_jsonl(tmp_path / "r2.jsonl")


def test_temporaries_of_a_killed_writer_are_removed_on_the_next_write(tmp_path: Path) -> None:
    # what SIGKILL leaves behind: a temporary directory holding a half-written artifact
    stale = tmp_path / ".a.json.k1ll3d.tmp"
    stale.mkdir()
    (stale / "a.json").write_text("{half")
    other = tmp_path / ".b.json.k1ll3d.tmp"  # another artifact's temporary: not ours to touch
    other.mkdir()
    write_json(tmp_path / "a.json", {"x": 2})
    assert read_json(tmp_path / "a.json") == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.json.k1ll3d.tmp", "a.json"]


def test_outputs_discard_what_was_written_and_keep_the_rest(tmp_path: Path) -> None:
    from circuitlab.io import Outputs

    new, changed, untouched = tmp_path / "new.json", tmp_path / "old.json", tmp_path / "keep.json"
    folder = tmp_path / "model"
    changed.write_text("1")
    untouched.write_text("1")
    outputs = Outputs()
    for p in (new, changed, untouched, folder):
        outputs.add(p)
    new.write_text("x")
    os.utime(changed, ns=(0, 0))  # rewritten by the stage (a new mtime)
    folder.mkdir()
    (folder / "weights").write_text("w")
    assert sorted(outputs.written()) == sorted([new, changed, folder])
    outputs.discard_written()
    assert not new.exists() and not changed.exists() and not folder.exists()
    assert untouched.read_text() == "1"


def test_a_command_failing_after_its_first_output_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`datasets` writes its rows, then its metrics fail: neither is left (exit code 2)."""
    import sys

    from circuitlab import tracking
    from circuitlab.cli import main
    from circuitlab.errors import ArtifactError

    def broken(*args: object, **kwargs: object) -> None:
        raise ArtifactError("the metrics disk is full")

    working = tracking.log_metrics
    monkeypatch.setattr(tracking, "log_metrics", broken)
    rows, metrics = tmp_path / "capitals.jsonl", tmp_path / "metrics.json"
    argv = ["circuitlab", "datasets", "--task", "capitals", "--out", str(rows)]
    monkeypatch.setattr(sys, "argv", [*argv, "--metrics", str(metrics)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert not rows.exists() and not metrics.exists()
    # not monkeypatch.undo(): it would also undo the test environment (tests/conftest.py)
    monkeypatch.setattr(tracking, "log_metrics", working)
    main()  # and without the failure both are written
    assert rows.exists() and metrics.exists()
