"""How the report writes a value: numbers to significant digits, shares as percentages,
intervals as ``mean ± half`` or ``mean [lo, hi]``, and a missing value as ``—``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from circuitlab.steering.artifact import Interval

if TYPE_CHECKING:
    from circuitlab.lrp.metrics import Bounds


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: None → '—', ints as is, floats with `digits` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value == 0:
            return "0"
        if abs(value) >= 10 ** (digits + 2) or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f} %"


def plus_minus(mean: Any, half: Any) -> str:
    if mean is None:
        return "—"
    return fmt(mean) if half is None else f"{fmt(mean)} ± {fmt(half, 2)}"


def bracket_range(bounds: Bounds | None, digits: int = 3) -> str:
    """`` [lo, hi]`` of an interval's bounds, or nothing."""
    if bounds is None:
        return ""
    return f" [{fmt(bounds.lo, digits)}, {fmt(bounds.hi, digits)}]"


def interval_cell(
    cell: Interval | None, digits: int = 3, number: Callable[[Any, int], str] = fmt
) -> str:
    """``mean [lo, hi]`` of a bootstrap interval, all three written by the same `number` at the
    same `digits`: rounding to a fixed number of significant digits keeps order, so the written
    point always lies inside the written interval (mixing 3 digits for the point with 2 for the
    ends once gave ``0.997 [1, 1]``)."""
    if cell is None:
        return "—"
    mean, lo, hi = (number(v, digits) for v in (cell.mean, cell.lo, cell.hi))
    return f"{mean} [{lo}, {hi}]"


def beats_random(
    value: float | None, mean: float | None, ci: float | None, *, higher: bool
) -> bool | None:
    """Whether ``value`` lies beyond the random interval (above it when ``higher``)."""
    if value is None or mean is None:
        return None
    half = ci if ci is not None and ci == ci else 0.0
    return value > mean + half if higher else value < mean - half
