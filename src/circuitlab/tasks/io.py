"""Reading dataset artifacts (`data/datasets/…jsonl`) back into validated rows."""

from __future__ import annotations

from pathlib import Path

from circuitlab.errors import DatasetError
from circuitlab.io import read_jsonl
from circuitlab.tasks.base import parse_rows
from circuitlab.types import TaskRow


def load_rows(
    path: str | Path, *, rule: str | None = None, split: str | None = None
) -> list[TaskRow]:
    """Rows of a dataset file, validated; `split` keeps only "train" or "test" rows."""
    rows = parse_rows(read_jsonl(path, rule=rule), str(path))
    if split is not None:
        if split not in ("train", "test"):
            raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
        rows = [r for r in rows if r.split == split]
    if not rows:
        raise DatasetError(f"{path} has no rows{f' in the {split} split' if split else ''}")
    return rows
