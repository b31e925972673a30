"""ACDC's per-edge trace: what each check of one τ measured and decided, in visiting order.

A check of edge ``e`` patches it on top of the edges removed so far and measures the
faithfulness (distance from the clean logits, `circuitlab.acdc.metrics`); with
``Δ = faithfulness − baseline`` (``baseline``: the faithfulness before the check) the edge
is removed when ``Δ < τ``, and the baseline becomes the new faithfulness. The trace keeps,
per check, the edge (its storage index), the baseline, the faithfulness, the decision and
whether the decision is *near τ*: ``|Δ − τ|`` within float rounding of the values involved,
so that a differently batched forward (or another tool) could round it the other way.

Explaining a circuit, or a disagreement with another implementation, then needs no re-run:
``trace.rows(edges, tau)`` lists every check with its margin ``Δ − τ``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: A decision closer than this to τ (relative to the faithfulness values involved) is within
#: float rounding of one forward against another (batched differently, another library), on a
#: float32 model; a model in another dtype scales both by its resolution (`near_tau`).
NEAR_TAU_RTOL = 1e-5
NEAR_TAU_ATOL = 1e-7
#: float32's machine epsilon (``torch.finfo(torch.float32).eps``), the resolution the
#: constants above are for
FLOAT32_EPS = 2.0**-23


def near_tau(faithfulness: float, baseline: float, tau: float, eps: float = FLOAT32_EPS) -> bool:
    """Whether ``Δ = faithfulness − baseline`` is within rounding distance of ``tau`` on a model
    whose dtype has machine epsilon ``eps`` (``torch.finfo(dtype).eps``): the float32
    tolerances times ``√(eps / FLOAT32_EPS)`` — the same on a float32 model, 256 times wider
    on a bf16 one. The float32 constants keep a wide margin over float32's own rounding (they
    cover another library's forward); the metrics are float32 but computed from the model's
    logits, and on the tiny test models a bf16 forward's KL lies within about 2·10⁻⁵ of the
    float32 one at KL ≈ 10⁻² (`tests/acdc/test_backend.py`), which the √ scaling covers and
    the full ratio 2¹⁶ would swamp (every decision of a τ below 10⁻² would be "near")."""
    scale = max(abs(faithfulness), abs(baseline), tau)
    coarser = math.sqrt(eps / FLOAT32_EPS)
    return abs(faithfulness - baseline - tau) <= (NEAR_TAU_ATOL + NEAR_TAU_RTOL * scale) * coarser


@dataclass(frozen=True)
class EdgeTrace:
    """The checks of one τ in visiting order, as columns (one entry per check)."""

    edge: tuple[int, ...] = ()
    baseline: tuple[float, ...] = ()
    faithfulness: tuple[float, ...] = ()
    removed: tuple[bool, ...] = ()
    near_tau: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.edge)
        if any(
            len(c) != n for c in (self.baseline, self.faithfulness, self.removed, self.near_tau)
        ):
            raise ValueError("the columns of an edge trace must have one entry per check")

    def __len__(self) -> int:
        return len(self.edge)

    @property
    def delta(self) -> tuple[float, ...]:
        """``faithfulness − baseline`` per check."""
        return tuple(f - b for f, b in zip(self.faithfulness, self.baseline, strict=True))

    @property
    def n_near_tau(self) -> int:
        return sum(self.near_tau)

    def rows(self, edges: Sequence[str], tau: float) -> list[dict[str, Any]]:
        """One dict per check: edge name, baseline, faithfulness, Δ, margin ``Δ − τ``,
        removed, near_tau (for a table or a DataFrame)."""
        return [
            {
                "edge": edges[e],
                "baseline": b,
                "faithfulness": f,
                "delta": f - b,
                "margin": f - b - tau,
                "removed": r,
                "near_tau": n,
            }
            for e, b, f, r, n in zip(
                self.edge,
                self.baseline,
                self.faithfulness,
                self.removed,
                self.near_tau,
                strict=True,
            )
        ]

    def to_json(self) -> dict[str, list[Any]]:
        return {
            "edge": list(self.edge),
            "baseline": list(self.baseline),
            "faithfulness": list(self.faithfulness),
            "removed": list(self.removed),
            "near_tau": list(self.near_tau),
        }

    @classmethod
    def from_json(cls, data: dict[str, Sequence[Any]]) -> EdgeTrace:
        return cls(
            edge=tuple(int(e) for e in data["edge"]),
            baseline=tuple(float(b) for b in data["baseline"]),
            faithfulness=tuple(float(f) for f in data["faithfulness"]),
            removed=tuple(bool(r) for r in data["removed"]),
            near_tau=tuple(bool(n) for n in data["near_tau"]),
        )


@dataclass
class TraceRecorder:
    """Collects the checks of one τ; ``enabled=False`` records nothing (``build`` → None).
    ``eps``: the model dtype's machine epsilon (`near_tau`)."""

    tau: float
    enabled: bool = True
    eps: float = FLOAT32_EPS
    _cols: tuple[list[Any], ...] = field(default_factory=lambda: ([], [], [], [], []))
    n_near_tau: int = 0

    def check(self, edge: int, baseline: float, faithfulness: float, removed: bool) -> None:
        near = near_tau(faithfulness, baseline, self.tau, self.eps)
        self.n_near_tau += near
        if self.enabled:
            row = (edge, baseline, faithfulness, removed, near)
            for col, value in zip(self._cols, row, strict=True):
                col.append(value)

    def build(self) -> EdgeTrace | None:
        return EdgeTrace(*(tuple(c) for c in self._cols)) if self.enabled else None
