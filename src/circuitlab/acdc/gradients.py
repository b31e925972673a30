"""Edge scores from gradients at the destination inputs — the engine of EAP and EAP-IG.

An edge's first-order effect is ``⟨δ_src, ∂metric/∂dest_in⟩`` summed over prompts and
positions, with ``δ_src`` the source's ablated − clean output (fixed, from `prepare`). The
gradient at every destination input comes from one backward through an *unpatched* forward
whose destinations each read their own copy of the residual (`GradientProbe`): the saved
tensors are one ``[B, n_dests, S, d]`` input per block, not one per edge, so memory does not
grow with the number of edges (mask gradients, `circuitlab.acdc.eap.eap_scores`, hold
``[B, n_sources, S, d]`` differences per block for the backward).

What the forward runs decides the estimator, as in EAP-IG (Hanna et al. 2024; MIB's
``attribute``):

* plain (`dest_gradients` with nothing replaced) — EAP's gradient at the clean run;
* ``embed`` — the ``Resid Start`` output replaced by a point on the line from its ablated to
  its clean value (EAP-IG-inputs);
* ``outputs`` — one block's source outputs replaced by a point between ablated and clean
  (EAP-IG-activations), everything else computed as usual.

Scores here are in circuitlab's sign and scale (`circuitlab.acdc.eap` module doc): ≈
metric(edge patched) − metric(clean) of the batch-mean metric. MIB's EAP-IG reports
``−score / B`` (it differentiates the loss −logit difference, sums over prompts and divides by
their number after a batch-mean metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from circuitlab.acdc.attention import DestInputs
from circuitlab.acdc.batch import PatchContext
from circuitlab.acdc.graph import Block
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import _blocks, _unembed, source_start


@dataclass(eq=False)
class GradientProbe:
    """Gives every destination its own input ``resid + z`` with ``z = 0`` requiring grad (one
    ``z`` per block, made on first use), and replaces the outputs of the blocks in
    ``outputs`` (keyed by block offset) with fixed values."""

    outputs: dict[int, Tensor] = field(default_factory=dict)
    z: dict[int, Tensor] = field(default_factory=dict)

    def inputs(self, block: Block, resid: Tensor) -> DestInputs:
        z = self.z.get(block.offset)
        if z is None:
            shape = (1, resid.shape[1], block.n_dests, *resid.shape[2:])
            z = torch.zeros(shape, dtype=resid.dtype, device=resid.device, requires_grad=True)
            self.z[block.offset] = z
        return DestInputs(resid, list(range(block.n_dests)), resid[:, :, None] + z)

    def output(self, block: Block, out: Tensor) -> Tensor:
        fixed = self.outputs.get(block.offset)
        return out if fixed is None else fixed.expand_as(out)


def dest_gradients(
    ctx: PatchContext,
    metric: str = "logit_diff",
    *,
    embed: Tensor | None = None,
    outputs: dict[int, Tensor] | None = None,
) -> tuple[float, dict[int, Tensor]]:
    """(metric value, ∂metric/∂dest_in per block offset) of one unpatched forward of the
    batch (``embed``: the ``Resid Start`` output ``[B, S, d]`` to use instead of the clean one;
    ``outputs``: fixed source outputs by block offset, `GradientProbe`). The gradients are
    ``[B, n_dests, S, d]`` (``S = 1``, the answer position, for ``Resid End``; zeros for a
    block whose outputs are replaced). The model's parameters get no gradient."""
    pm = ctx.model
    probe = GradientProbe(outputs or {})
    with torch.enable_grad():
        src = ctx.clean_src[None, :, : source_start(pm.graph, 0)]
        resid = ctx.clean_resid[0][None]
        if embed is not None:
            src, resid = embed[None, :, None], embed[None]
        src, resid = _blocks(pm, ctx.positional, None, None, src, resid, 0, probe=probe)
        logits = _unembed(pm, ctx.positional, None, None, src, resid, False, probe=probe)
        value = get_metric(metric)(logits, ctx)[0]
        offsets = sorted(probe.z)
        zs = [probe.z[o] for o in offsets]
        # a block whose outputs are replaced does not reach the metric: zero gradient
        grads = torch.autograd.grad(value, zs, allow_unused=True, materialize_grads=True)
    return float(value.detach()), {o: g[0] for o, g in zip(offsets, grads, strict=True)}


def source_delta(ctx: PatchContext) -> Tensor:
    """``[B, n_sources, S, d]``: each source's ablated − clean output."""
    return (ctx.ablated - ctx.clean_src).expand_as(ctx.clean_src)


def edge_scores(ctx: PatchContext, grads: dict[int, Tensor], delta: Tensor) -> Tensor:
    """``[n_edges]`` in storage order: ``Σ_{b,s} ⟨delta[b, src, s], grads[dst][b, s]⟩`` per
    edge (``delta`` ``[B, n_sources, S, d]``; ``Resid End`` at each answer position)."""
    graph = ctx.graph
    out = torch.empty(graph.n_edges, dtype=torch.float32, device=delta.device)
    end = graph.end_block
    rows = torch.arange(delta.shape[0], device=delta.device)
    for block in graph.blocks:
        g = grads[block.offset].float()  # [B, n_dests, S, d]
        d = delta[:, : block.n_sources].float()
        if block.offset == end.offset:
            d = d[rows, :, ctx.positional.last][:, :, None]  # [B, n, 1, d]
        s = torch.einsum("bnsd,brsd->rn", d, g)
        out[block.offset : block.stop] = s.reshape(-1)
    return out
