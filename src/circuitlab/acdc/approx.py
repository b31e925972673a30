"""Batched approximate ACDC (the idea of seed 003): fewer evaluations, decisions that may differ
from sequential ACDC's — so every run reports its agreement with it (`decision_agreement`).

* ``window`` (d1, seed 003 literally): test a window of consecutive edges (in `acdc_order`,
  never spanning two destination blocks) *independently* against the current circuit in one
  batched forward — candidate j alone removed on top of the current state — and remove every
  candidate that passes (``faith_j − baseline < τ``) at once; the new state's faithfulness
  becomes the baseline (one more forward unless exactly one candidate passed). Removals that
  pass alone may not pass together, which is where it departs from sequential ACDC; with a
  window of 1 it *is* sequential ACDC.
* ``group`` (d2, group testing): remove a whole group of consecutive edges when their joint
  removal raises the faithfulness by less than τ; otherwise split it in halves and test each
  (the first half first, then the second against the updated baseline), down to single edges,
  where the test is sequential ACDC's. Most edges do not matter, so one evaluation can clear
  dozens of them.
* ``guided`` (gradient-guided group testing): group testing whose groups are drawn by an
  estimate of each edge's effect — EAP-IG of the faithfulness metric (`circuitlab.acdc.eap`,
  ``ig_steps`` points, one forward and one backward for the whole sweep). Walking the ACDC
  order, an edge whose estimate reaches ``risk · τ`` is checked alone (as sequential ACDC
  would); consecutive edges below it form a group while their summed estimate stays below
  ``risk · τ`` (at most ``window`` edges, never across a destination block). Groups are
  then as large as the estimate says is safe — large where nothing matters, single edges
  where something does — and a group that fails is bisected as in ``group``.

Both use the fast forward of `circuitlab.acdc.fast` (resume at the window's block, the last
block at the answer position only) and visit edges in ``cfg.edge_order``. They keep no
per-edge trace (a check there tests a set of edges, not one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from circuitlab.acdc.eap import eap_scores
from circuitlab.acdc.graph import acdc_order
from circuitlab.acdc.incremental import Heads, incremental_checks
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.acdc.sequential import ACDCResult, SweepConfig, TauResult
from circuitlab.errors import ConfigError
from circuitlab.progress import bar as progress_bar

Variant = Literal["window", "group", "guided"]


@dataclass(frozen=True)
class ApproxConfig:
    """``variant``: "window" (d1), "group" (d2) or "guided"; ``window``: edges per window (d1),
    the initial group size (d2) or the largest group (guided), ≥ 1; ``ig_steps`` and ``risk``:
    the guided variant's estimate and its budget per group (module doc)."""

    variant: Variant = "group"
    window: int = 16
    ig_steps: int = 5
    risk: float = 0.5

    def __post_init__(self) -> None:
        if self.variant not in get_args(Variant):
            raise ConfigError(
                f"approximate ACDC variant {self.variant!r} is unknown; choose one of "
                f"{list(get_args(Variant))}"
            )
        if not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(f"approximate ACDC window must be an integer ≥ 1, got {self.window}")
        if not isinstance(self.ig_steps, int) or self.ig_steps < 2:
            raise ConfigError(f"guided ACDC ig_steps must be an integer ≥ 2, got {self.ig_steps}")
        if not (math.isfinite(self.risk) and self.risk > 0):
            raise ConfigError(f"guided ACDC risk must be positive and finite, got {self.risk}")


@dataclass(frozen=True)
class ApproxACDCResult(ACDCResult):
    """`ACDCResult` of an approximation, with its variant and edge-set evaluations."""

    variant: str = "group"
    n_evaluations: int = 0

    def to_json(self) -> dict[str, Any]:
        name = "acdc_window" if self.variant == "window" else "acdc_approx"
        return {
            **super().to_json(),
            "method": name,
            "variant": self.variant,
            "n_evaluations": self.n_evaluations,
        }


class _Evaluator:
    """Faithfulness of edge sets with the fast forward; counts passes and evaluated sets. One
    edge set on top of the current state (``begin``) uses `IncrementalChecks` (the state's
    head outputs are kept; ``accept`` after a removal)."""

    def __init__(self, ctx: PatchContext, faithfulness: str, block_of: list[int], resume: bool):
        self.ctx, self.metric = ctx, get_metric(faithfulness)
        self.block_of, self.resume = block_of, resume
        self.n_forward = self.n_sets = 0
        self.checks = incremental_checks(ctx) if resume else None
        self.state: Tensor | None = None
        self.cache: Heads = None
        self.pending: Heads = None

    def begin(self, mask: Tensor) -> None:
        """A new search from the state ``mask`` (updated in place by the search)."""
        self.state, self.cache, self.pending = mask, None, None

    def accept(self) -> None:
        """The last single edge set was removed: it is the state now."""
        self.cache = self.pending

    def __call__(self, masks: Tensor, edges: Sequence[int]) -> list[float]:
        self.n_forward += 1
        self.n_sets += masks.shape[0]
        if self.checks is not None and self.state is not None and masks.shape[0] == 1 and edges:
            logits, self.cache, self.pending = self.checks.check(
                self.state, self.cache, masks[0], edges
            )
            return self.metric(logits, self.ctx).tolist()
        start = min(self.block_of[e] for e in edges) if self.resume and edges else 0
        logits = forward(self.ctx, masks, start_layer=start, answer_only=True)
        return self.metric(logits, self.ctx).tolist()


def approx_acdc(
    ctx: PatchContext, cfg: SweepConfig | None = None, approx: ApproxConfig | None = None
) -> ApproxACDCResult:
    """The τ sweep of `sequential_acdc` with an approximate, batched search (module doc)."""
    cfg = cfg or SweepConfig()
    approx = approx or ApproxConfig()
    start = time.perf_counter()
    graph, pm = ctx.graph, ctx.model
    block_of = graph.edge_block_layer.tolist()
    order = acdc_order(graph, cfg.edge_order)
    evaluate = _Evaluator(ctx, cfg.faithfulness, block_of, cfg.resume)
    scores = [math.inf] * graph.n_edges
    per_tau = []
    search = _window_search if approx.variant == "window" else _group_search
    estimate: list[float] | None = None
    if approx.variant == "guided":
        estimate = eap_scores(ctx, cfg.faithfulness, approx.ig_steps).abs().tolist()
        evaluate.n_forward += 1  # the estimate's pass (its backward is not counted)
    done = progress_bar(
        total=len(cfg.taus) * len(order), desc=f"acdc ({approx.variant}): τ × edges", unit="edge"
    )
    with torch.no_grad():
        for tau in cfg.taus:
            done.set_postfix(tau=f"{tau:g}", refresh=False)
            mask = torch.zeros(graph.n_edges, dtype=pm.dtype, device=pm.device)
            baseline = 0.0
            if approx.variant != "window":
                evaluate.begin(mask)
            if estimate is None:
                groups = _blocks_of(order, block_of, approx.window)
            else:
                groups = _guided_groups(order, block_of, estimate, approx.risk * tau, approx.window)
            for group in groups:
                baseline = search(evaluate, mask, group, baseline, tau)
                done.update(len(group))
            removed = mask.nonzero().flatten().tolist()
            for i in removed:
                scores[i] = min(scores[i], tau)
            kept = tuple(graph.edges[i] for i in (mask == 0).nonzero().flatten().tolist())
            per_tau.append(TauResult(tau, kept, len(removed), baseline))
    done.close()
    return ApproxACDCResult(
        edges=graph.edges,
        scores=tuple(scores),
        per_tau=tuple(per_tau),
        faithfulness=cfg.faithfulness,
        ablation=ctx.ablation,
        n_forward=ctx.n_forward + evaluate.n_forward,
        seconds=ctx.seconds + time.perf_counter() - start,
        edge_order=cfg.edge_order,
        variant=approx.variant,
        n_evaluations=evaluate.n_sets,
    )


def _blocks_of(order: list[int], block_of: list[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most ``size`` edges of `order`, never spanning two blocks."""
    groups: list[list[int]] = []
    for edge in order:
        if groups and len(groups[-1]) < size and block_of[groups[-1][0]] == block_of[edge]:
            groups[-1].append(edge)
        else:
            groups.append([edge])
    return groups


def _guided_groups(
    order: list[int], block_of: list[int], estimate: list[float], budget: float, size: int
) -> list[list[int]]:
    """Consecutive runs of `order`: an edge whose estimate reaches ``budget`` alone, the others
    grouped while their summed estimate stays below it (≤ ``size`` edges, one block)."""
    groups: list[list[int]] = []
    total = math.inf  # the open group's summed estimate (inf: no open group)
    for edge in order:
        est = estimate[edge]
        if est >= budget:
            groups.append([edge])
            total = math.inf
            continue
        last = groups[-1] if groups else None
        if (
            last is None
            or total + est >= budget
            or len(last) >= size
            or block_of[last[0]] != block_of[edge]
        ):
            groups.append([edge])
            total = est
        else:
            last.append(edge)
            total += est
    return groups


def _window_search(
    evaluate: _Evaluator, mask: Tensor, window: list[int], baseline: float, tau: float
) -> float:
    """d1: each candidate alone on top of the current state; remove all that pass."""
    masks = mask.repeat(len(window), 1)
    for j, edge in enumerate(window):
        masks[j, edge] = 1.0
    faith = evaluate(masks, window)
    passing = [j for j, f in enumerate(faith) if f - baseline < tau]
    for j in passing:
        mask[window[j]] = 1.0
    if len(passing) == 1:
        return faith[passing[0]]
    if passing:
        return evaluate(mask[None], window)[0]
    return baseline


def _group_search(
    evaluate: _Evaluator, mask: Tensor, group: list[int], baseline: float, tau: float
) -> float:
    """d2: remove the whole group if it passes jointly, else bisect (first half first)."""
    trial = mask.clone()
    trial[group] = 1.0
    faith = evaluate(trial[None], group)[0]
    if faith - baseline < tau:
        mask[group] = 1.0
        evaluate.accept()
        return faith
    if len(group) == 1:
        return baseline
    half = len(group) // 2
    baseline = _group_search(evaluate, mask, group[:half], baseline, tau)
    return _group_search(evaluate, mask, group[half:], baseline, tau)


def decision_agreement(a: ACDCResult, b: ACDCResult) -> dict[str, Any]:
    """How far two τ sweeps over the same graph agree: per τ (keyed ``f"{τ:g}"``) the share of
    edges with the same kept/removed decision and the Jaccard index of the kept edges, and
    their means (``overall``, ``jaccard``)."""
    if a.edges != b.edges or [r.tau for r in a.per_tau] != [r.tau for r in b.per_tau]:
        raise ConfigError("decision agreement needs two results over the same edges and τ sweep")
    n = len(a.edges)
    per_tau: dict[str, dict[str, float]] = {}
    for ra, rb in zip(a.per_tau, b.per_tau, strict=True):
        ka, kb = set(ra.kept), set(rb.kept)
        union = ka | kb
        per_tau[f"{ra.tau:g}"] = {
            "agreement": 1.0 - len(ka ^ kb) / n if n else 1.0,
            "jaccard": len(ka & kb) / len(union) if union else 1.0,
        }
    values = list(per_tau.values())
    return {
        "overall": sum(v["agreement"] for v in values) / len(values),
        "jaccard": sum(v["jaccard"] for v in values) / len(values),
        "per_tau": per_tau,
    }
