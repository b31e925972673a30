"""Exact fast ACDC: the decisions of `sequential_acdc`, edge for edge, for a fraction of the cost.

Three levers, all exact:

* **compute only what the measured output depends on.** Faithfulness is read at the answer
  position, so every check runs the last block's queries and MLP at that position only
  (`forward(..., answer_only=True)`), resumes at the smallest destination block of the
  edges it patches (earlier blocks come from the clean cache), and a check of an edge into
  ``Resid End`` is one unembedding of one position per prompt;
* **recompute only what the edge changes** (``incremental``, window 1): the visited block's
  head outputs are kept with the state, and a check recomputes only the heads its edge feeds
  before resuming after that block's attention (`circuitlab.acdc.incremental`);
* **prefix speculation.** A window of k consecutive candidates (in `acdc_order`) is evaluated
  in one batched forward: candidate j with candidates 0..j-1 of the window *also* removed,
  i.e. speculating that they are. Sequential ACDC's decisions are then replayed in order —
  candidate j is removed iff ``faith_j − faith_{j−1} < τ`` (``faith_{−1}``: the current
  baseline) — up to and including the first "keep"; after a keep the speculation for the rest
  of the window was wrong and they are evaluated again in the next window. The window grows
  (×2, up to ``max_window``) while whole windows are removed and halves after an early keep,
  or is fixed. A window never spans two destination blocks, so all of it resumes at its block.

A τ **sweep shares its work** (``share_sweep``, on by default): all thresholds visit the
edges together. At any edge, thresholds whose removal history so far is identical are in the
same state, so one check decides all of them — the group splits into the thresholds with
``Δ < τ`` (they remove the edge; a suffix of the sorted thresholds) and the rest. A sweep then
costs one check per edge and *distinct state* instead of one per edge and τ. Two groups never
meet again (their states differ on an edge already decided, and every edge is visited once),
so this is all the sharing exact ACDC allows. On a CPU each group's check is a single forward
(the same call as a one-τ run, so the decisions are bit-identical); on an accelerator the
groups' checks at one edge share one batched forward (and speculation is not used).

Every accepted decision was made on exactly the state sequential ACDC would have had, so the
results are the same up to float rounding (a batched forward may round differently from a
single one). A decision whose margin ``|Δ − τ|`` is within that rounding could go either way;
such decisions are counted (``near_tau_decisions``, and per τ ``TauResult.n_near_tau``) and
reported, not hidden; the per-edge trace (`circuitlab.acdc.trace`) flags each of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from circuitlab.acdc.graph import acdc_order
from circuitlab.acdc.incremental import Heads, incremental_checks
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.acdc.sequential import ACDCResult, SweepConfig, TauResult
from circuitlab.acdc.trace import TraceRecorder
from circuitlab.errors import ConfigError
from circuitlab.progress import bar as progress_bar


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
    share_sweep: bool = True  # several τ: one check per distinct state (module doc)
    batch_groups: bool | None = None  # shared sweep: one forward per edge (None: off on CPU)
    incremental: bool = True  # single-state checks reuse the state's head outputs (module doc)

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
    n_checks_unshared: int = 0  # what one run per τ checks: n_taus × n_edges

    def to_json(self) -> dict[str, int]:
        return {
            "n_batched_forward": self.n_batched,
            "n_candidate_evaluations": self.n_candidates,
            "n_wasted_evaluations": self.n_wasted,
            "near_tau_decisions": self.near_tau_decisions,
            "n_checks_unshared": self.n_checks_unshared,
        }


@dataclass(frozen=True)
class FastACDCResult(ACDCResult):
    """`ACDCResult` plus the speculation statistics."""

    stats: FastStats = FastStats()

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "method": "acdc_fast", **self.stats.to_json()}


def fast_acdc(
    ctx: PatchContext, cfg: SweepConfig | None = None, fast: FastConfig | None = None
) -> FastACDCResult:
    """The τ sweep of `sequential_acdc` with the same decisions and prune scores, computed with
    answer-position-only last blocks and prefix speculation (module doc). ``n_forward`` counts
    batched passes (plus `prepare`'s); the stats say how many candidates they held."""
    cfg = cfg or SweepConfig()
    fast = fast or FastConfig()
    pm = ctx.model
    adaptive = fast.window is None and (
        fast.adaptive if fast.adaptive is not None else pm.device.type != "cpu"
    )
    width = fast.window or (fast.start_window if adaptive else 1)
    if fast.share_sweep and len(cfg.taus) > 1:
        return shared_sweep(ctx, cfg, fast)
    if width == 1 and not adaptive:  # no speculation: one state per τ
        return _merge(ctx, [shared_sweep(ctx, cfg.single(tau), fast) for tau in cfg.taus])
    start = time.perf_counter()
    graph = ctx.graph
    metric = get_metric(cfg.faithfulness)
    order = acdc_order(graph, cfg.edge_order)
    block_of = graph.edge_block_layer.tolist()
    scores = [math.inf] * graph.n_edges
    per_tau = []
    stats = FastStats()
    done = progress_bar(
        total=len(cfg.taus) * len(order), desc="acdc (speculative): τ × edges", unit="edge"
    )
    with torch.no_grad():
        for tau in cfg.taus:
            done.set_postfix(tau=f"{tau:g}", refresh=False)
            mask = torch.zeros(graph.n_edges, dtype=pm.dtype, device=pm.device)
            baseline, n_removed, pos = 0.0, 0, 0
            trace = TraceRecorder(tau, cfg.trace, torch.finfo(pm.dtype).eps)
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
                done.update(accepted)
                if adaptive:
                    if accepted < k:  # an early keep: speculate less
                        width = max(1, width // 2)
                    elif k == width:  # a whole window removed: speculate more
                        width = min(width * 2, fast.max_window)
            kept = tuple(graph.edges[i] for i in (mask == 0).nonzero().flatten().tolist())
            per_tau.append(
                TauResult(tau, kept, n_removed, baseline, trace.n_near_tau, trace.build())
            )
    done.close()
    return _result(ctx, cfg, scores, per_tau, start, stats)


def _result(
    ctx: PatchContext,
    cfg: SweepConfig,
    scores: list[float],
    per_tau: list[TauResult],
    start: float,
    stats: FastStats,
) -> FastACDCResult:
    """The result of a sweep that began at ``start`` (``n_forward`` = prepare's + ours)."""
    graph = ctx.graph
    return FastACDCResult(
        edges=graph.edges,
        scores=tuple(scores),
        per_tau=tuple(per_tau),
        faithfulness=cfg.faithfulness,
        ablation=ctx.ablation,
        n_forward=ctx.n_forward + stats.n_batched,
        seconds=ctx.seconds + time.perf_counter() - start,
        edge_order=cfg.edge_order,
        stats=replace(stats, n_checks_unshared=len(cfg.taus) * graph.n_edges),
    )


def _merge(ctx: PatchContext, runs: list[FastACDCResult]) -> FastACDCResult:
    """One result from one run per τ (in the sweep's order) on the same prepared batch."""
    stats = FastStats(*(sum(getattr(r.stats, f.name) for r in runs) for f in fields(FastStats)))
    return replace(
        runs[0],
        scores=tuple(min(s) for s in zip(*(r.scores for r in runs), strict=True)),
        per_tau=tuple(t for r in runs for t in r.per_tau),
        n_forward=ctx.n_forward + stats.n_batched,
        seconds=ctx.seconds + sum(r.seconds - ctx.seconds for r in runs),
        stats=stats,
    )


@dataclass
class _Group:
    """Thresholds (indices into the sorted sweep) in one state: the edges removed so far
    (``mask``), the faithfulness of that state (``baseline``) and, for the incremental
    check, the head outputs of the block being visited under that state (``heads``)."""

    taus: list[int]
    mask: Tensor
    baseline: float = 0.0
    n_removed: int = 0
    heads: Heads = None


def shared_sweep(
    ctx: PatchContext, cfg: SweepConfig, fast: FastConfig | None = None
) -> FastACDCResult:
    """Every τ of the sweep at once, one check per edge and distinct state (module doc); the
    same per-τ decisions, scores and traces as one `fast_acdc` run per τ."""
    fast = fast or FastConfig()
    start = time.perf_counter()
    graph, pm = ctx.graph, ctx.model
    metric = get_metric(cfg.faithfulness)
    taus = sorted(set(cfg.taus))
    block_of = graph.edge_block_layer.tolist()
    batch = fast.batch_groups if fast.batch_groups is not None else pm.device.type != "cpu"
    scores = [math.inf] * graph.n_edges
    traces = [TraceRecorder(tau, cfg.trace, torch.finfo(pm.dtype).eps) for tau in taus]
    groups = [
        _Group(list(range(len(taus))), torch.zeros(graph.n_edges, dtype=pm.dtype, device=pm.device))
    ]
    n_forward = n_checks = 0
    checker = incremental_checks(ctx) if fast.incremental and not batch and cfg.resume else None
    edges = progress_bar(
        acdc_order(graph, cfg.edge_order), desc=f"acdc: {len(taus)} τ, edges", unit="edge"
    )
    with torch.no_grad():
        for edge in edges:
            edges.set_postfix(states=len(groups), checks=n_checks, refresh=False)
            resume = block_of[edge] if cfg.resume else 0
            trials = torch.stack([g.mask for g in groups])
            trials[:, edge] = 1.0
            new_heads: list[Heads] = [g.heads for g in groups]
            if batch:
                logits = forward(ctx, trials, start_layer=resume, answer_only=True)
                faiths = metric(logits, ctx).tolist()
                n_forward += 1
            elif checker is not None:
                faiths = []
                for j, (g, row) in enumerate(zip(groups, trials, strict=True)):
                    logits, g.heads, new_heads[j] = checker.check(g.mask, g.heads, row, [edge])
                    faiths.append(float(metric(logits, ctx)[0]))
                n_forward += len(groups)
            else:
                faiths = []
                for row in trials:
                    logits = forward(ctx, row[None], start_layer=resume, answer_only=True)
                    faiths.append(float(metric(logits, ctx)[0]))
                n_forward += len(groups)
            n_checks += len(groups)
            split: list[_Group] = []
            for g, faith, trial, heads in zip(groups, faiths, trials, new_heads, strict=True):
                delta = faith - g.baseline
                removers = [i for i in g.taus if delta < taus[i]]  # a suffix: τ ascending
                for i in g.taus:
                    traces[i].check(edge, g.baseline, faith, i in removers)
                if not removers:
                    continue
                scores[edge] = min(scores[edge], taus[removers[0]])
                moved = _Group(removers, trial.clone(), faith, g.n_removed + 1, heads)
                if len(removers) == len(g.taus):
                    g.mask, g.baseline, g.n_removed = moved.mask, moved.baseline, moved.n_removed
                    g.heads = heads
                else:
                    g.taus = g.taus[: len(g.taus) - len(removers)]
                    split.append(moved)
            groups += split
    final = {i: g for g in groups for i in g.taus}
    per_tau = []
    for tau in cfg.taus:
        i = taus.index(tau)
        g = final[i]
        kept = tuple(graph.edges[e] for e in (g.mask == 0).nonzero().flatten().tolist())
        per_tau.append(
            TauResult(tau, kept, g.n_removed, g.baseline, traces[i].n_near_tau, traces[i].build())
        )
    stats = FastStats(
        n_batched=n_forward,
        n_candidates=n_checks,
        near_tau_decisions=sum(t.n_near_tau for t in traces),
    )
    return _result(ctx, cfg, scores, per_tau, start, stats)
