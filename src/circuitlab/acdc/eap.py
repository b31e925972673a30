"""Edge attribution patching (EAP; Syed et al. 2023) — ACDC's gradient extreme.

An edge's score is the first-order estimate of how the metric changes when that edge alone is
patched: ``(ablated_src − clean_src) · ∂metric/∂dest_in``, summed over positions, which is
exactly the gradient of the metric w.r.t. the edge's mask value at mask 0. All edges are
scored by one forward and one backward: the gradient is taken at every destination input
(`circuitlab.acdc.gradients`), not at a per-edge mask, so the backward keeps no per-edge
tensor (`circuitlab.acdc.memory`); prompts go through in micro-batches and the parameters are
frozen for the pass. Metrics are batch means, so scores estimate the change of the batch-mean
metric (each micro-batch weighted by its share of the prompts).

**Precision on a bf16/fp16 model.** The forward and its backward run in the model dtype, so
the gradients at the destination inputs carry its rounding (a backward through a bf16 network
is bf16 whatever leaf it ends at). Everything after them is float32: the IG points, the
ablated − current differences (from the bf16 activations), the products, their sums over
prompts, positions, points and micro-batches, the scores and so the ranking — ~800k edges
do not collapse onto bf16's 256 values per octave, and ties in storage order stay rare.

Integrated gradients (EAP-IG, Hanna et al. 2024) average the gradient over ``n = ig_steps``
points of a path from the ablated to the clean run; *which* path is ``EAPConfig.ig``:

* ``masks`` (circuitlab's own) — every edge mask at ``α·1`` for ``α = k/n``, ``k = 0 … n−1``
  (all folded into one forward): the path from the clean to the fully patched *graph*, each
  edge scored by its own mask's gradient. ``ig_steps = 1`` is EAP.
* ``inputs`` (MIB's headline "EAP-IG-inputs") — only the ``Resid Start`` output moves, from
  its ablated to its clean value (``k/n``, ``k = 0 … n−1``); every edge is scored by
  ⟨ablated − clean source, ∂metric/∂destination input⟩ with the gradient taken at each point
  (`circuitlab.acdc.gradients`).
* ``activations`` (MIB's "EAP-IG-activations") — for each source block in turn (``Resid
  Start``, then each layer's heads, each MLP) its outputs move from ablated to clean (``k/n``,
  ``k = 1 … n``) with everything else computed as usual, and every edge takes the same
  product at each of the ``n · (2L + 1)`` points.

``inputs`` and ``activations`` are the peer's estimators (tested against EAP-IG's code: same
scores up to the peer's ``−1/B``); ``masks`` is a third one (Pearson 0.91–0.98 with
``inputs`` on the toy model, smaller scores: a mask blends the edge's source with its
ablation inside a run that is itself partly patched). KL and MSE have zero gradient at the
clean model, so ``masks`` needs ``ig_steps ≥ 2`` with them.

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

from circuitlab.acdc.gradients import (
    dest_gradients,
    edge_scores,
    masked_dest_gradients,
    prompt_slices,
)
from circuitlab.acdc.graph import head_source_index, mlp_source_index
from circuitlab.acdc.memory import eap_micro_batch
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.errors import ConfigError

EAPMetric = Literal["logit_diff", "target_logit", "kl", "mse"]

#: The sign convention in words (module doc), written into results and artifacts.
SIGN_CONVENTION = (
    "score = d metric / d mask ≈ metric(edge patched) − metric(clean); "
    "auto-circuit's mask_gradient_prune_scores is −score"
)


IGPath = Literal["masks", "inputs", "activations"]


@dataclass(frozen=True)
class EAPConfig:
    """The metric differentiated, the number of integrated-gradient steps and their path
    (module doc; ``ig_steps = 1`` with ``masks`` is EAP); ``micro_batch``: prompts per pass
    of the ``masks`` path (None: what `circuitlab.acdc.memory.eap_micro_batch` fits)."""

    metric: EAPMetric = "logit_diff"
    ig_steps: int = 1
    ig: IGPath = "masks"
    micro_batch: int | None = None

    def __post_init__(self) -> None:
        if self.ig not in get_args(IGPath):
            raise ConfigError(
                f"EAP-IG path {self.ig!r} is unknown; choose one of {get_args(IGPath)}"
            )
        if self.metric not in get_args(EAPMetric):
            raise ConfigError(
                f"EAP metric {self.metric!r} is unknown; choose one of {list(get_args(EAPMetric))}"
            )
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ConfigError(f"EAP micro_batch must be ≥ 1 prompt, got {self.micro_batch}")
        if not isinstance(self.ig_steps, int) or self.ig_steps < 1:
            raise ConfigError(f"EAP ig_steps must be an integer ≥ 1, got {self.ig_steps!r}")
        if self.metric in ("kl", "mse") and self.ig_steps < 2 and self.ig == "masks":
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
    ig: str
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
            "ig": self.ig,
            "ablation": self.ablation,
            "n_edges": len(self.edges),
            "scores": self.scores_by_name(),
            "clean_metric": self.clean_metric,
            "sign": SIGN_CONVENTION,
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "seconds": self.seconds,
        }


def eap_scores(
    ctx: PatchContext,
    metric: str = "logit_diff",
    ig_steps: int = 1,
    *,
    micro_batch: int | None = None,
) -> Tensor:
    """``[n_edges]`` float32: the gradient of ``metric`` w.r.t. each edge's mask, averaged over
    the ``ig_steps`` points where every mask is ``α = k/ig_steps`` (``k = 0 … ig_steps−1``).

    On the native patch layer the gradient of edge ``src → dest`` at any mask value is
    ``⟨ablated − current src, ∂metric/∂dest_in⟩`` (`circuitlab.acdc.gradients`): one masked
    forward per ``micro_batch`` prompts (all points folded into it) with the gradient probe at
    every destination and the parameters frozen, so what the backward keeps grows with the
    destinations, not the edges (`circuitlab.acdc.memory`). ``micro_batch`` None: as many
    prompts as `memory.eap_micro_batch` fits in its budget. The TransformerLens backend has no
    probe: there the mask itself requires grad (one pass over all prompts)."""
    if not ctx.model.supports_dest_gradients:  # the transformer_lens backend: no probe
        return _mask_gradient(ctx, metric, ig_steps)
    graph = ctx.graph
    n = len(ctx.batch)
    if micro_batch is None:
        micro_batch = eap_micro_batch(ctx, ig_steps)
    if micro_batch < 1:
        raise ConfigError(f"EAP micro_batch must be ≥ 1 prompt, got {micro_batch}")
    masks = _ig_masks(ctx, ig_steps)
    total = torch.zeros(graph.n_edges, dtype=torch.float32, device=ctx.model.device)
    for part in prompt_slices(ctx, micro_batch):
        grads, sources = masked_dest_gradients(part, masks, metric)
        total += edge_scores(part, grads, sources) * (len(part.batch) / n)
    return total / ig_steps


def _ig_masks(ctx: PatchContext, ig_steps: int) -> Tensor:
    """``[ig_steps, n_edges]`` float32: every edge's mask at the points ``α = k/ig_steps``
    (a view; ``k = 0 … ig_steps−1``)."""
    alphas = torch.arange(ig_steps, dtype=torch.float32, device=ctx.model.device) / ig_steps
    return alphas[:, None].expand(ig_steps, ctx.graph.n_edges)


def _mask_gradient(ctx: PatchContext, metric: str, ig_steps: int) -> Tensor:
    """The mask gradient itself (a float32 leaf; the forward casts it to the model dtype), for
    a backend without the gradient probe."""
    mask = _ig_masks(ctx, ig_steps).clone().requires_grad_(True)
    values = get_metric(metric)(forward(ctx, mask), ctx)
    (grad,) = torch.autograd.grad(values.sum(), mask)
    return grad.mean(0)


def ig_input_scores(ctx: PatchContext, metric: str = "logit_diff", steps: int = 5) -> Tensor:
    """EAP-IG-inputs (module doc): ``[n_edges]``, the mean over ``k = 0 … steps−1`` of the
    edge products at the run whose ``Resid Start`` is ``ablated + k/steps · (clean −
    ablated)``."""
    clean = ctx.clean_src[:, 0]
    ablated = ctx.ablated[:, 0].expand_as(clean)
    total = torch.zeros(ctx.graph.n_edges, device=clean.device)
    for k in range(steps):
        _, grads = dest_gradients(ctx, metric, embed=ablated + (k / steps) * (clean - ablated))
        total += edge_scores(ctx, grads, ctx.clean_src)
    return total / steps


def ig_activation_scores(ctx: PatchContext, metric: str = "logit_diff", steps: int = 5) -> Tensor:
    """EAP-IG-activations (module doc): ``[n_edges]``, the mean over every source block (``Resid
    Start``, each layer's heads, each MLP) and ``k = 1 … steps`` of the edge products at the run
    whose block outputs are ``ablated + k/steps · (clean − ablated)``.

    One detail follows EAP-IG's code rather than the formula: in the runs that move the
    embedding, destinations that read nothing but the embedding (the first block's attention
    inputs) contribute nothing — there the embedding is a constant, and TransformerLens's
    backward hooks never fire on inputs computed from constants only. Counting them changes
    those edges' scores by about 8 % on the toy model (Pearson 0.995 with the peer instead of
    1.000); circuitlab follows the peer so that its scores are MIB's."""
    graph = ctx.graph
    clean_all = ctx.clean_src
    ablated_all = ctx.ablated.expand_as(clean_all)
    spans: list[tuple[int | None, int, int]] = [(None, 0, 1)]  # (block offset, first, stop)
    for layer in range(graph.n_layers):
        first = head_source_index(layer, 0, graph.n_heads)
        spans.append((graph.attn_block(layer).offset, first, first + graph.n_heads))
        mlp = mlp_source_index(layer, graph.n_heads)
        spans.append((graph.mlp_block(layer).offset, mlp, mlp + 1))
    total = torch.zeros(graph.n_edges, device=clean_all.device)
    for offset, first, stop in spans:
        clean, ablated = clean_all[:, first:stop], ablated_all[:, first:stop]
        for k in range(1, steps + 1):
            point = ablated + (k / steps) * (clean - ablated)  # [B, n, S, d]
            if offset is None:
                _, grads = dest_gradients(ctx, metric, embed=point[:, 0])
                for block in graph.blocks:  # as EAP-IG's code (see the docstring)
                    if block.n_sources == 1:
                        grads[block.offset] = torch.zeros_like(grads[block.offset])
            else:
                _, grads = dest_gradients(ctx, metric, outputs={offset: point[None]})
            total += edge_scores(ctx, grads, clean_all)
    return total / (len(spans) * steps)


def edge_attribution(ctx: PatchContext, cfg: EAPConfig | None = None) -> EAPResult:
    """EAP (or EAP-IG) scores of every edge on a prepared batch (its ablation is the patch)."""
    cfg = cfg or EAPConfig()
    start = time.perf_counter()
    n_passes = 1
    if cfg.ig == "inputs":
        scores = ig_input_scores(ctx, cfg.metric, cfg.ig_steps)
        n_passes = cfg.ig_steps
    elif cfg.ig == "activations":
        scores = ig_activation_scores(ctx, cfg.metric, cfg.ig_steps)
        n_passes = cfg.ig_steps * (2 * ctx.graph.n_layers + 1)
    else:
        scores = eap_scores(ctx, cfg.metric, cfg.ig_steps, micro_batch=cfg.micro_batch)
    clean = float(get_metric(cfg.metric)(ctx.clean_logits[None], ctx)[0])
    return EAPResult(
        edges=ctx.graph.edges,
        scores=tuple(scores.float().tolist()),
        metric=cfg.metric,
        ig_steps=cfg.ig_steps,
        ablation=ctx.ablation,
        ig=cfg.ig,
        clean_metric=clean,
        n_forward=ctx.n_forward + n_passes,
        n_backward=n_passes,
        seconds=ctx.seconds + time.perf_counter() - start,
    )
