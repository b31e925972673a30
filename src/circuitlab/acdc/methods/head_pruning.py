"""``head_pruning``: the seed's greedy head-level ACDC (`circuitlab.acdc.heads`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from circuitlab.acdc.registry import EdgeMethod
from circuitlab.types import StrictModel

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext
    from circuitlab.acdc.settings import AcdcConfig


class HeadPruningSettings(StrictModel):
    threshold: float = Field(
        default=0.1, gt=0, allow_inf_nan=False, description="|Δmetric| threshold"
    )
    metric: Literal["target_logit", "logit_diff", "kl"] = Field(
        default="target_logit", description="the metric a pruned head may move (seed: target_logit)"
    )


def run(ctx: PatchContext, cfg: AcdcConfig, own: HeadPruningSettings) -> dict[str, Any]:
    from circuitlab.acdc.artifact import EdgeCircuit
    from circuitlab.acdc.heads import HeadPruningConfig, prune_heads

    res = prune_heads(ctx, HeadPruningConfig(threshold=own.threshold, metric=own.metric))
    graph = ctx.graph
    src_names = [graph.sources[int(s)] for s in graph.edge_src.tolist()]
    scores = tuple(abs(res.deltas[s]) if s in res.deltas else math.inf for s in src_names)
    pruned = set(res.pruned)
    kept = tuple(e for e, s in zip(graph.edges, src_names, strict=True) if s not in pruned)
    return {
        "scores": scores,
        "score_kind": "head_delta",
        "circuits": (EdgeCircuit("heads", kept, None, res.final_metric),),
        "n_forward": res.n_forward,
        "n_backward": 0,
        "metric_values": {"initial": res.initial_metric, "final": res.final_metric},
        "details": {"kept_heads": ",".join(res.kept), "n_pruned_heads": len(res.pruned)},
    }


METHOD = EdgeMethod(
    name="head_pruning",
    summary="greedy head-level pruning: heads from the last layer back; a head stays pruned "
    "when ablating it with the heads pruned so far moves `metric` by less than `threshold`; "
    "the circuit is every edge not leaving a pruned head",
    settings=HeadPruningSettings,
    run=run,
    kind="single",
    score="the source head's \\|Δmetric\\| (`inf` out of Resid Start and the MLPs)",
    cost="one forward per head: L·H",
    order=40,
)
