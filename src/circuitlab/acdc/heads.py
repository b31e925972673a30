"""Greedy attention-head pruning (the seed's head-level ACDC).

Heads are visited by layer descending, heads ascending inside a layer. Each is tentatively
ablated together with the heads pruned so far — all of its outgoing edges patched, which with
``zero`` ablation is the seed's zeroing of the head's ``hook_result`` (the output-projection
bias is not part of any head and stays) — and it stays pruned if the metric moved less than
``threshold`` from the unpruned model's: ``|metric(pruned ∪ {head}) − metric(none)| <
threshold``. Prepare the batch with ``ablation="zero"`` for the seed's semantics.

Metrics (batch means at the answer position): ``target_logit`` (the seed's), ``logit_diff``
(target − counterfactual) or ``kl`` (KL(clean ‖ pruned), 0 for the unpruned model).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.errors import ConfigError

HeadMetric = Literal["target_logit", "logit_diff", "kl"]


@dataclass(frozen=True)
class HeadPruningConfig:
    """Threshold on |Δmetric| and the metric. ``resume=False`` recomputes every block."""

    threshold: float = 0.1
    metric: HeadMetric = "target_logit"
    resume: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ConfigError(
                f"head pruning threshold must be positive and finite, got {self.threshold}"
            )
        if self.metric not in get_args(HeadMetric):
            raise ConfigError(
                f"head pruning metric {self.metric!r} is unknown; choose one of "
                f"{list(get_args(HeadMetric))}"
            )


@dataclass(frozen=True)
class HeadPruningResult:
    """Heads kept and pruned (``"A{l}.{h}"``), each head's Δmetric when tried (visit order),
    the metric before and after pruning, and the cost."""

    kept: tuple[str, ...]
    pruned: tuple[str, ...]
    deltas: dict[str, float]
    initial_metric: float
    final_metric: float
    metric: str
    threshold: float
    ablation: str
    n_forward: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "head_pruning",
            "metric": self.metric,
            "threshold": self.threshold,
            "ablation": self.ablation,
            "kept": list(self.kept),
            "pruned": list(self.pruned),
            "deltas": dict(self.deltas),
            "initial_metric": self.initial_metric,
            "final_metric": self.final_metric,
            "n_forward": self.n_forward,
            "seconds": self.seconds,
        }


def prune_heads(ctx: PatchContext, cfg: HeadPruningConfig | None = None) -> HeadPruningResult:
    """Greedy head pruning on a prepared batch; one forward pass per head."""
    cfg = cfg or HeadPruningConfig()
    start = time.perf_counter()
    graph, pm = ctx.graph, ctx.model
    metric = get_metric(cfg.metric)
    initial = float(metric(ctx.clean_logits[None], ctx)[0])
    current = initial
    mask = torch.zeros(1, graph.n_edges, dtype=pm.dtype, device=pm.device)
    deltas: dict[str, float] = {}
    pruned, kept = [], []
    n_forward = ctx.n_forward
    with torch.no_grad():
        for layer in reversed(range(graph.n_layers)):
            for head in range(graph.n_heads):
                name = graph.sources[graph.head_source(layer, head)]
                out_edges = graph.edges_from(graph.head_source(layer, head)).to(pm.device)
                trial = mask.clone()
                trial[0, out_edges] = 1.0
                resume_at = layer if cfg.resume else 0
                value = float(metric(forward(ctx, trial, start_layer=resume_at), ctx)[0])
                n_forward += 1
                deltas[name] = value - initial
                if abs(value - initial) < cfg.threshold:
                    mask, current = trial, value
                    pruned.append(name)
                else:
                    kept.append(name)
    order = {name: i for i, name in enumerate(graph.sources)}
    return HeadPruningResult(
        kept=tuple(sorted(kept, key=order.__getitem__)),
        pruned=tuple(pruned),
        deltas=deltas,
        initial_metric=initial,
        final_metric=current,
        metric=cfg.metric,
        threshold=cfg.threshold,
        ablation=ctx.ablation,
        n_forward=n_forward,
        seconds=ctx.seconds + time.perf_counter() - start,
    )
