"""Edge attribution patching (EAP; Syed et al. 2023) — ACDC's gradient extreme.

An edge's score is the first-order estimate of how the metric changes when that edge alone is
patched: ``(ablated_src − clean_src) · ∂metric/∂dest_in``, summed over positions, which is
exactly the gradient of the metric w.r.t. the edge's mask value at mask 0. All edges are
scored by one forward (clean run with a zero float mask that requires grad) and one backward.
Metrics are batch means, so scores estimate the change of the batch-mean metric.

With ``ig_steps = n > 1`` the gradient is averaged over masks ``α·1`` for ``α = k/n``,
``k = 0 … n−1`` (all folded into one forward): integrated gradients along the path from the
clean to the fully patched model (EAP-IG). KL and MSE have zero gradient at the clean model,
so they need ``ig_steps ≥ 2``.

**Sign convention.** A score is ``∂metric/∂mask`` — the first-order estimate of
``metric(edge patched) − metric(clean)``: the change the metric undergoes when the edge alone
carries the ablated activation. It has the sign and units of a measured patching effect
(ACDC's Δ, head pruning's Δ), so signed scores compare with patching experiments as they are:
with ``logit_diff``, a negative score marks an edge that supports the answer. auto-circuit's
``mask_gradient_prune_scores`` differentiates the *loss* ``−logit_diff`` and so returns
``−score``; negate one side before a signed comparison (rankings by ``|score|`` agree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.errors import ConfigError

EAPMetric = Literal["logit_diff", "target_logit", "kl", "mse"]

#: The sign convention in words (module doc), written into results and artifacts.
SIGN_CONVENTION = (
    "score = d metric / d mask ≈ metric(edge patched) − metric(clean); "
    "auto-circuit's mask_gradient_prune_scores is −score"
)


@dataclass(frozen=True)
class EAPConfig:
    """The metric differentiated and the number of integrated-gradient steps (1 = EAP)."""

    metric: EAPMetric = "logit_diff"
    ig_steps: int = 1

    def __post_init__(self) -> None:
        if self.metric not in get_args(EAPMetric):
            raise ConfigError(
                f"EAP metric {self.metric!r} is unknown; choose one of {list(get_args(EAPMetric))}"
            )
        if not isinstance(self.ig_steps, int) or self.ig_steps < 1:
            raise ConfigError(f"EAP ig_steps must be an integer ≥ 1, got {self.ig_steps!r}")
        if self.metric in ("kl", "mse") and self.ig_steps < 2:
            raise ConfigError(
                f"EAP with metric {self.metric!r} needs ig_steps ≥ 2: its gradient at the clean "
                "model is zero. Use metric 'logit_diff' or set ig_steps (e.g. 5)"
            )


@dataclass(frozen=True)
class EAPResult:
    """Signed scores per edge (storage order; sign: module doc), the clean metric, the cost."""

    edges: tuple[str, ...]
    scores: tuple[float, ...]
    metric: str
    ig_steps: int
    ablation: str
    clean_metric: float
    n_forward: int
    n_backward: int
    seconds: float

    def scores_by_name(self) -> dict[str, float]:
        return dict(zip(self.edges, self.scores, strict=True))

    def ranking(self) -> list[str]:
        """Edge names by |score| descending (ties in storage order)."""
        order = sorted(range(len(self.edges)), key=lambda i: -abs(self.scores[i]))
        return [self.edges[i] for i in order]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "eap",
            "metric": self.metric,
            "ig_steps": self.ig_steps,
            "ablation": self.ablation,
            "n_edges": len(self.edges),
            "scores": self.scores_by_name(),
            "clean_metric": self.clean_metric,
            "sign": SIGN_CONVENTION,
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "seconds": self.seconds,
        }


def eap_scores(ctx: PatchContext, metric: str = "logit_diff", ig_steps: int = 1) -> Tensor:
    """``[n_edges]`` gradient of ``metric`` w.r.t. each edge's mask (averaged over the
    ``ig_steps`` interpolation points), from one forward and one backward pass."""
    fn = get_metric(metric)
    pm = ctx.model
    alphas = torch.arange(ig_steps, dtype=pm.dtype, device=pm.device) / ig_steps
    mask = alphas[:, None].expand(ig_steps, ctx.graph.n_edges).clone().requires_grad_(True)
    values = fn(forward(ctx, mask), ctx)
    (grad,) = torch.autograd.grad(values.sum(), mask)
    return grad.mean(0).detach()


def edge_attribution(ctx: PatchContext, cfg: EAPConfig | None = None) -> EAPResult:
    """EAP scores of every edge on a prepared batch (its ablation is the patch)."""
    cfg = cfg or EAPConfig()
    start = time.perf_counter()
    scores = eap_scores(ctx, cfg.metric, cfg.ig_steps)
    clean = float(get_metric(cfg.metric)(ctx.clean_logits[None], ctx)[0])
    return EAPResult(
        edges=ctx.graph.edges,
        scores=tuple(scores.float().tolist()),
        metric=cfg.metric,
        ig_steps=cfg.ig_steps,
        ablation=ctx.ablation,
        clean_metric=clean,
        n_forward=ctx.n_forward + 1,
        n_backward=1,
        seconds=ctx.seconds + time.perf_counter() - start,
    )
