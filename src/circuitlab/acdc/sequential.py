"""Sequential edge-level ACDC (auto-circuit's ``acdc_prune_scores``, Conmy et al. 2023).

For each τ of the sweep ``tao_bases × 10^tao_exps`` (in ``product(tao_bases, tao_exps)``
order), starting from no edge patched and a baseline faithfulness of 0, visit every edge in
`acdc_order` (destination layer descending; ``edge_order`` chooses the order inside a
layer): patch it tentatively; if
``faithfulness − baseline < τ`` it stays patched (removed from the circuit) and the baseline
becomes that faithfulness, otherwise it is unpatched again. An edge's prune score is the
smallest τ at which it was removed (``inf``: never removed, i.e. in every circuit).

Faithfulness is the distance of the patched answer-position logits from the clean ones:
``kl`` (KL(clean ‖ patched), batch mean) or ``mse``. Each check is one forward pass that
resumes at the edge's destination block (every edge removed earlier is at that block or
later), so earlier blocks come from the clean cache. With ``trace=True`` (the default) every
τ's result carries its per-edge trace (`circuitlab.acdc.trace`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from itertools import product
from typing import Any, Literal, get_args

import torch

from circuitlab.acdc.graph import EDGE_ORDERS, acdc_order
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.acdc.trace import EdgeTrace, TraceRecorder
from circuitlab.errors import ConfigError

Faithfulness = Literal["kl", "mse"]


@dataclass(frozen=True)
class SweepConfig:
    """The τ sweep (auto-circuit's defaults), the faithfulness metric, the order of edges
    inside a destination layer (`acdc_order`: ``"circuitlab"`` or ``"autocircuit"``) and
    whether to keep the per-edge trace. ``resume=False`` runs every check from the first
    block (slower, same result; for testing)."""

    tao_bases: tuple[float, ...] = (1, 3, 5, 7, 9)
    tao_exps: tuple[int, ...] = (-5, -4, -3, -2)
    faithfulness: Faithfulness = "kl"
    edge_order: str = "circuitlab"
    trace: bool = True
    resume: bool = True

    def __post_init__(self) -> None:
        if self.faithfulness not in get_args(Faithfulness):
            raise ConfigError(
                f"acdc faithfulness {self.faithfulness!r} is unknown; choose 'kl' or 'mse'"
            )
        if not self.tao_bases or not self.tao_exps:
            raise ConfigError("acdc needs at least one tao base and one tao exponent")
        if self.edge_order not in EDGE_ORDERS:
            raise ConfigError(
                f"acdc edge_order {self.edge_order!r} is unknown; choose one of {list(EDGE_ORDERS)}"
            )
        bad = [t for t in self.taus if not (math.isfinite(t) and t > 0)]
        if bad:
            raise ConfigError(
                f"acdc thresholds τ = base·10^exp must be positive and finite; got {bad[:5]} "
                f"from tao_bases={list(self.tao_bases)}, tao_exps={list(self.tao_exps)}"
            )

    def single(self, tau: float) -> SweepConfig:
        """This configuration with the one-value sweep ``τ = tau · 10^0``."""
        return replace(self, tao_bases=(tau,), tao_exps=(0,))

    @property
    def taus(self) -> tuple[float, ...]:
        """``a · 10^b`` for ``(a, b)`` in ``product(tao_bases, tao_exps)``."""
        return tuple(float(a) * 10.0 ** float(b) for a, b in product(self.tao_bases, self.tao_exps))


@dataclass(frozen=True)
class TauResult:
    """The circuit found at one τ: the edges kept (not patched), its faithfulness, the
    number of decisions within rounding distance of τ and (if kept) the per-edge trace."""

    tau: float
    kept: tuple[str, ...]
    n_removed: int
    faithfulness: float
    n_near_tau: int = 0
    trace: EdgeTrace | None = None


@dataclass(frozen=True)
class ACDCResult:
    """Prune scores per edge (storage order; ``inf`` = never removed), circuits per τ, cost."""

    edges: tuple[str, ...]
    scores: tuple[float, ...]
    per_tau: tuple[TauResult, ...]
    faithfulness: str
    ablation: str
    n_forward: int
    seconds: float
    edge_order: str = "circuitlab"

    def scores_by_name(self) -> dict[str, float]:
        return dict(zip(self.edges, self.scores, strict=True))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``inf`` scores stay floats: `circuitlab.io.write_json` allows them)."""
        return {
            "method": "acdc",
            "faithfulness": self.faithfulness,
            "ablation": self.ablation,
            "edge_order": self.edge_order,
            "n_edges": len(self.edges),
            "scores": self.scores_by_name(),
            "taus": [
                {
                    "tau": r.tau,
                    "n_kept": len(r.kept),
                    "n_removed": r.n_removed,
                    "faithfulness": r.faithfulness,
                    "n_near_tau": r.n_near_tau,
                    "kept": list(r.kept),
                    "trace": r.trace.to_json() if r.trace is not None else None,
                }
                for r in self.per_tau
            ],
            "n_forward": self.n_forward,
            "seconds": self.seconds,
        }


def sequential_acdc(ctx: PatchContext, cfg: SweepConfig | None = None) -> ACDCResult:
    """Run the τ sweep on a prepared batch (its ablation is the patch). ``n_forward`` and
    ``seconds`` include `prepare`'s passes and time."""
    cfg = cfg or SweepConfig()
    start = time.perf_counter()
    graph, pm = ctx.graph, ctx.model
    metric = get_metric(cfg.faithfulness)
    order = acdc_order(graph, cfg.edge_order)
    block_of = graph.edge_block_layer.tolist()
    scores = [math.inf] * graph.n_edges
    per_tau = []
    n_forward = ctx.n_forward
    with torch.no_grad():
        for tau in cfg.taus:
            mask = torch.zeros(1, graph.n_edges, dtype=pm.dtype, device=pm.device)
            baseline, n_removed = 0.0, 0
            trace = TraceRecorder(tau, cfg.trace, torch.finfo(pm.dtype).eps)
            for i in order:
                mask[0, i] = 1.0
                resume_at = block_of[i] if cfg.resume else 0
                faith = float(metric(forward(ctx, mask, start_layer=resume_at), ctx)[0])
                n_forward += 1
                removed = faith - baseline < tau  # unimportant: stays patched
                trace.check(i, baseline, faith, removed)
                if removed:
                    scores[i] = min(scores[i], tau)
                    baseline, n_removed = faith, n_removed + 1
                else:
                    mask[0, i] = 0.0
            kept = tuple(graph.edges[i] for i in (mask[0] == 0).nonzero().flatten().tolist())
            per_tau.append(
                TauResult(tau, kept, n_removed, baseline, trace.n_near_tau, trace.build())
            )
    return ACDCResult(
        edges=graph.edges,
        scores=tuple(scores),
        per_tau=tuple(per_tau),
        faithfulness=cfg.faithfulness,
        ablation=ctx.ablation,
        n_forward=n_forward,
        seconds=ctx.seconds + time.perf_counter() - start,
        edge_order=cfg.edge_order,
    )
