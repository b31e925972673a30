"""Exact fast ACDC: the decisions of `sequential_acdc`, edge for edge, for a fraction of the cost.

Two levers, both exact:

* **compute only what the measured output depends on.** Faithfulness is read at the answer
  position, so every check runs the last block's queries and MLP at that position only
  (`forward(..., answer_only=True)`), resumes at the smallest destination block of the
  edges it patches (earlier blocks come from the clean cache), and a check of an edge into
  ``Resid End`` is one unembedding of one position per prompt;
* **prefix speculation.** A window of k consecutive candidates (in `acdc_order`) is evaluated
  in one batched forward: candidate j with candidates 0..j-1 of the window *also* removed,
  i.e. speculating that they are. Sequential ACDC's decisions are then replayed in order —
  candidate j is removed iff ``faith_j − faith_{j−1} < τ`` (``faith_{−1}``: the current
  baseline) — up to and including the first "keep"; after a keep the speculation for the rest
  of the window was wrong and they are evaluated again in the next window. The window grows
  (×2, up to ``max_window``) while whole windows are removed and halves after an early keep,
  or is fixed. A window never spans two destination blocks, so all of it resumes at its block.

Every accepted decision was made on exactly the state sequential ACDC would have had, so the
results are the same up to float rounding (a batched forward may round differently from a
single one). A decision whose margin ``|Δ − τ|`` is within that rounding could go either way;
such decisions are counted (``near_tau_decisions``, and per τ ``TauResult.n_near_tau``) and
reported, not hidden; the per-edge trace (`circuitlab.acdc.trace`) flags each of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from circuitlab.acdc.graph import acdc_order
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.acdc.sequential import ACDCConfig, ACDCResult, TauResult
from circuitlab.acdc.trace import TraceRecorder
from circuitlab.errors import ConfigError


@dataclass(frozen=True)
class FastConfig:
    """``window``: an int ≥ 1 = fixed; None = automatic: adaptive on an accelerator (start at
    ``start_window``, ×2 after a fully removed window, ÷2 after an early keep, within
    1..``max_window``) and 1 on a CPU, where a batch of k candidates costs more than k single
    checks (measured in BENCHMARKS.md: the per-destination inputs of k edge sets are
    memory-bound), so only the first lever pays there."""

    window: int | None = None
    max_window: int = 16
    start_window: int = 4
    adaptive: bool | None = None  # with window None: force adaptive (True) or 1 (False)

    def __post_init__(self) -> None:
        for name in ("max_window", "start_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"acdc fast.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.window is not None and self.window < 1:
            raise ConfigError(
                f"acdc fast.window must be ≥ 1 (or null: adaptive), got {self.window}"
            )


@dataclass(frozen=True)
class FastStats:
    """What the speed-up cost: batched passes, candidate evaluations (k per pass), wasted ones
    (evaluated under a speculation that a keep broke), near-τ decisions."""

    n_batched: int = 0
    n_candidates: int = 0
    n_wasted: int = 0
    near_tau_decisions: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "n_batched_forward": self.n_batched,
            "n_candidate_evaluations": self.n_candidates,
            "n_wasted_evaluations": self.n_wasted,
            "near_tau_decisions": self.near_tau_decisions,
        }


@dataclass(frozen=True)
class FastACDCResult(ACDCResult):
    """`ACDCResult` plus the speculation statistics."""

    stats: FastStats = FastStats()

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "method": "acdc_fast", **self.stats.to_json()}


def fast_acdc(
    ctx: PatchContext, cfg: ACDCConfig | None = None, fast: FastConfig | None = None
) -> FastACDCResult:
    """The τ sweep of `sequential_acdc` with the same decisions and prune scores, computed with
    answer-position-only last blocks and prefix speculation (module doc). ``n_forward`` counts
    batched passes (plus `prepare`'s); the stats say how many candidates they held."""
    cfg = cfg or ACDCConfig()
    fast = fast or FastConfig()
    start = time.perf_counter()
    graph, pm = ctx.graph, ctx.model
    metric = get_metric(cfg.faithfulness)
    order = acdc_order(graph, cfg.edge_order)
    block_of = graph.edge_block_layer.tolist()
    scores = [math.inf] * graph.n_edges
    per_tau = []
    stats = FastStats()
    adaptive = fast.window is None and (
        fast.adaptive if fast.adaptive is not None else pm.device.type != "cpu"
    )
    width = fast.window or (fast.start_window if adaptive else 1)
    with torch.no_grad():
        for tau in cfg.taus:
            mask = torch.zeros(graph.n_edges, dtype=pm.dtype, device=pm.device)
            baseline, n_removed, pos = 0.0, 0, 0
            trace = TraceRecorder(tau, cfg.trace)
            while pos < len(order):
                window = order[pos : pos + width]
                # one destination block per window: the whole window resumes at its block
                window = [e for e in window if block_of[e] == block_of[window[0]]]
                k = len(window)
                masks = mask.repeat(k, 1)
                for j, edge in enumerate(window):
                    masks[j:, edge] = 1.0  # row j: candidates 0..j removed
                resume = block_of[window[0]] if cfg.resume else 0
                logits = forward(ctx, masks, start_layer=resume, answer_only=True)
                faith = metric(logits, ctx).tolist()
                accepted, near_before = 0, trace.n_near_tau
                for j, edge in enumerate(window):
                    removed = faith[j] - baseline < tau  # unimportant: stays removed
                    trace.check(edge, baseline, faith[j], removed)
                    accepted = j + 1
                    if not removed:
                        break
                    mask[edge] = 1.0
                    scores[edge] = min(scores[edge], tau)
                    baseline, n_removed = faith[j], n_removed + 1
                stats = replace(
                    stats,
                    n_batched=stats.n_batched + 1,
                    n_candidates=stats.n_candidates + k,
                    n_wasted=stats.n_wasted + k - accepted,
                    near_tau_decisions=stats.near_tau_decisions + trace.n_near_tau - near_before,
                )
                pos += accepted
                if adaptive:
                    if accepted < k:  # an early keep: speculate less
                        width = max(1, width // 2)
                    elif k == width:  # a whole window removed: speculate more
                        width = min(width * 2, fast.max_window)
            kept = tuple(graph.edges[i] for i in (mask == 0).nonzero().flatten().tolist())
            per_tau.append(
                TauResult(tau, kept, n_removed, baseline, trace.n_near_tau, trace.build())
            )
    return FastACDCResult(
        edges=graph.edges,
        scores=tuple(scores),
        per_tau=tuple(per_tau),
        faithfulness=cfg.faithfulness,
        ablation=ctx.ablation,
        n_forward=ctx.n_forward + stats.n_batched,
        seconds=ctx.seconds + time.perf_counter() - start,
        edge_order=cfg.edge_order,
        stats=stats,
    )
