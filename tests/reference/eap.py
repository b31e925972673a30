"""EAP's mask gradients the obvious way: every edge's mask value requires grad and the slow
edge-by-edge forward of `reference.acdc` is differentiated — a per-edge graph, no probe, no
micro-batches (what circuitlab's own EAP computed before it took destination-input
gradients)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from circuitlab.acdc import Graph
from circuitlab.acdc.batch import PatchContext
from circuitlab.acdc.metrics import get_metric
from circuitlab.models import LoadedModel
from circuitlab.types import TaskRow
from reference.acdc import reference_logits


def reference_mask_scores(
    lm: LoadedModel,
    graph: Graph,
    tokenizer: object,
    rows: Sequence[TaskRow],
    ctx: PatchContext,
    ablation: str,
    metric: str = "logit_diff",
    ig_steps: int = 1,
) -> Tensor:
    """``[n_edges]``: ∂metric/∂mask averaged over the masks ``α·1``, ``α = k/ig_steps``
    (``k = 0 … ig_steps−1``); ``ctx`` gives the metric its answers and clean logits only."""
    fn = get_metric(metric)
    grads = []
    for k in range(ig_steps):
        mask = torch.full((graph.n_edges,), k / ig_steps, dtype=lm.model.dtype, requires_grad=True)
        logits = reference_logits(lm, graph, tokenizer, rows, mask, ablation)
        (grad,) = torch.autograd.grad(fn(logits[None], ctx)[0], mask)
        grads.append(grad)
    return torch.stack(grads).mean(0)
