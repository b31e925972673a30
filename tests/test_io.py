"""Atomic artifact writes: a failure leaves neither a half-written file nor a temp file."""

from __future__ import annotations

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
