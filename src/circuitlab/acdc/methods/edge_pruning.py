"""``edge_pruning``: learned edge masks under a shrinking size budget, after Edge Pruning
(Bhaskar et al. 2024), made deterministic and turned into a ranking.

Each edge has a logit ``θ``; it is kept with weight ``m = sigmoid(θ)`` (its mask value, the
share of the ablated activation it carries, is ``1 − m``). The masks are trained on the train
prompts by Adam to keep the circuit's logits close to the full model's (``objective``: KL to
the clean answer distribution, or the squared gap in logit difference), while a hinge penalty
``penalty · max(0, mean m − budget)`` pushes the mean kept weight under a budget that shrinks
geometrically from every edge to ``final_fraction`` of them over ``steps`` steps. An edge's
score is its kept weight averaged over the steps: edges the optimiser keeps while the budget
tightens rank first — a ranking for every size at once, which is what MIB's curves read.

Differences from the paper, on purpose: no hard-concrete sampling (the same scores on every
run), a budget schedule instead of a Lagrangian on one target, the mean kept weight instead of
an L0 expectation, and a ranking instead of one binarised circuit. No torch at import.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from circuitlab.acdc.methods._ranking import RankingSettings, ranked
from circuitlab.acdc.registry import EdgeMethod

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext
    from circuitlab.acdc.settings import AcdcConfig


class EdgePruningSettings(RankingSettings):
    objective: Literal["kl", "logit_diff"] = Field(
        default="kl",
        description="what the masks keep: KL(clean ‖ circuit) at the answer, or the squared "
        "gap between the circuit's and the clean logit difference",
    )
    steps: int = Field(default=100, ge=2, description="optimisation steps")
    lr: float = Field(default=0.1, gt=0, allow_inf_nan=False, description="Adam's step size")
    final_fraction: float = Field(
        default=0.005,
        gt=0,
        le=1,
        description="the budget at the last step (mean kept weight), from 1 at the first",
    )
    penalty: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="weight of the budget's hinge"
    )
    init: float = Field(
        default=3.0, allow_inf_nan=False, description="every edge's initial logit θ"
    )


def run(ctx: PatchContext, cfg: AcdcConfig, own: EdgePruningSettings) -> dict[str, Any]:
    import torch

    from circuitlab.acdc.metrics import get_metric
    from circuitlab.acdc.patch import forward
    from circuitlab.progress import bar

    pm = ctx.model
    n = ctx.graph.n_edges
    theta = torch.full((n,), float(own.init), device=pm.device, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=own.lr)
    distance = get_metric("kl" if own.objective == "kl" else "logit_diff")
    clean_ld = 0.0  # the logit_diff objective's target
    if own.objective == "logit_diff":
        clean_ld = float(distance(ctx.clean_logits[None], ctx)[0])
    kept = torch.zeros(n, device=pm.device)
    losses = []
    progress = bar(total=own.steps, desc="edge pruning", unit="step")
    for t in range(own.steps):
        budget = math.exp(math.log(own.final_fraction) * t / (own.steps - 1))
        m = torch.sigmoid(theta)
        logits = forward(ctx, (1 - m).to(pm.dtype))
        value = distance(logits[None], ctx)[0]
        fit = value if own.objective == "kl" else (value - clean_ld) ** 2
        loss = fit + own.penalty * torch.relu(m.mean() - budget)
        opt.zero_grad()
        loss.backward()
        opt.step()
        kept += m.detach()
        losses.append(float(fit.detach()))
        progress.update(1)
    progress.close()
    score = (kept / own.steps).float().tolist()
    return ranked(
        ctx.graph.edges,
        score,
        own.sizes,
        sign="score = mean kept weight over the steps, in [0, 1] (higher = kept longer)",
        n_forward=ctx.n_forward + own.steps,
        n_backward=own.steps,
        metric_values={"fit_first": losses[0], "fit_last": losses[-1]},
        details={
            "objective": own.objective,
            "steps": own.steps,
            "final_kept": float(m.detach().mean()),
        },
        score_kind="learned_mask",
        signed_is_importance=True,
    )


METHOD = EdgeMethod(
    name="edge_pruning",
    summary="learned edge masks (after Edge Pruning, Bhaskar et al. 2024): sigmoid masks "
    "trained by Adam to keep the circuit's answer close to the full model's while a hinge "
    "pushes their mean under a budget shrinking from all edges to `final_fraction`; "
    "deterministic (no sampling)",
    settings=EdgePruningSettings,
    run=run,
    kind="ranking",
    score="the edge's kept weight averaged over the optimisation (higher = kept longer)",
    cost="`steps` forwards + backwards with a gradient for every edge (memory ∝ E per block)",
    order=80,
)
