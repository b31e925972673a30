"""scripts/gpu_check.py (`make gpu-check`): the comparison of two legs' results (the whole
check end to end: tests/integration/test_gpu_check.py)."""

from __future__ import annotations

import math

from script_support import load_script

check = load_script("gpu_check")


def test_numbers_leave_out_timings_and_read_written_infinities() -> None:
    value = {"kl": 0.5, "seconds": 3.0, "train_seconds": 1.0, "scores": [1, "inf"], "ok": True,
             "nested": {"max_rss": 9, "n": 2}, "label": "x"}  # fmt: skip
    assert dict(check.numbers(value)) == {
        "kl": 0.5, "scores[0]": 1.0, "scores[1]": math.inf, "ok": 1.0, "nested.n": 2.0,
    }  # fmt: skip


def test_a_number_outside_the_tolerance_or_on_one_side_only_is_listed() -> None:
    ref = {"metrics/a.json": {"kl": 1.0, "n": 3.0, "gone": 1.0, "nan": math.nan}, "only.json": {}}
    same = {"metrics/a.json": {"kl": 1.0005, "n": 3.0, "gone": 1.0, "nan": math.nan}}
    assert check.compare(ref, same, rtol=1e-3, atol=1e-4)["mismatches"] == []
    moved = {"metrics/a.json": {"kl": 1.01, "n": 3.0, "nan": math.nan}}
    out = check.compare(ref, moved, rtol=1e-3, atol=1e-4)
    assert out["mismatches"] == [
        {"file": "metrics/a.json", "key": "gone", "only_in": "ref"},
        {"file": "metrics/a.json", "key": "kl", "device": 1.01, "ref": 1.0},
    ]
    assert out["missing_files"] == ["only.json"]
