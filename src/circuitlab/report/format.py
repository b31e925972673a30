"""How the report writes a value: numbers to significant digits, shares as percentages,
intervals as ``mean ± half`` or ``mean [lo, hi]``, and a missing value as ``—``."""

from __future__ import annotations

import math
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


def bracket_range(bounds: Bounds | None) -> str:
    """`` [lo, hi]`` of an interval's bounds, or nothing."""
    if bounds is None:
        return ""
    return f" [{fmt(bounds.lo, 2)}, {fmt(bounds.hi, 2)}]"


def interval_cell(cell: Interval | None) -> str:
    """``mean [lo, hi]`` of a bootstrap interval."""
    if cell is None:
        return "—"
    return f"{fmt(cell.mean)} [{fmt(cell.lo, 2)}, {fmt(cell.hi, 2)}]"
