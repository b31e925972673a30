"""How the report and RESULTS.md write an interval: the point always lies inside the written
interval (issue 26: ``0.997 [1, 1]`` once put the point outside its own interval)."""

from __future__ import annotations

import numpy as np
import pytest

from circuitlab.report.format import fmt, interval_cell
from circuitlab.report.results import interval, num
from circuitlab.steering.artifact import Interval


def _parse(text: str) -> float:
    return float(text.replace("−", "-").replace(",", "").replace("∞", "inf"))


def _parts(cell: str) -> tuple[float, float, float]:
    mean, rest = cell.split(" [", 1)
    lo, hi = rest.rstrip("]").split(", ")
    return _parse(mean), _parse(lo), _parse(hi)


def test_the_case_that_went_wrong() -> None:
    cell = Interval(mean=0.99684, lo=0.99375, hi=1.0, n=64)
    assert interval_cell(cell) == "0.997 [0.994, 1]"
    assert interval(cell) == "0.997 [0.994, 1]"


@pytest.mark.parametrize("writer", [interval_cell, interval], ids=["report", "results"])
def test_the_written_point_lies_inside_the_written_interval(writer) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        scale = 10.0 ** rng.integers(-5, 6)
        mean = float(rng.normal() * scale)
        lo = mean - float(abs(rng.normal()) * scale * 10.0 ** rng.integers(-4, 1))
        hi = mean + float(abs(rng.normal()) * scale * 10.0 ** rng.integers(-4, 1))
        m, a, b = _parts(writer(Interval(mean=mean, lo=lo, hi=hi, n=10)))
        assert a <= m <= b, (mean, lo, hi, writer(Interval(mean=mean, lo=lo, hi=hi, n=10)))


def test_numbers_and_missing_values() -> None:
    assert interval_cell(None) == "—" and interval(None) == "—"
    assert fmt(None) == "—" and num(None) == "—"
