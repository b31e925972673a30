"""Edge scores from gradients at the destination inputs — the engine of EAP and EAP-IG.

An edge's first-order effect is ``⟨δ_src, ∂metric/∂dest_in⟩`` summed over prompts and
positions, with ``δ_src`` the source's ablated − clean output (fixed, from `prepare`). The
gradient at every destination input comes from one backward through an *unpatched* forward
whose destinations each read their own copy of the residual (`GradientProbe`): the saved
tensors are one ``[B, n_dests, S, d]`` input per block, not one per edge, so memory does not
grow with the number of edges (mask gradients hold ``[B, n_sources, S, d]`` differences per
block for the backward; `circuitlab.acdc.memory`). The probe also runs on a patched forward
(`masked_dest_gradients`): there ``⟨ablated − current source, ∂metric/∂dest_in⟩`` is the
gradient of the edge's mask at that mask value, which is how EAP-IG along the ``masks`` path
and guided group testing's estimate are computed.

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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from circuitlab.acdc.attention import DestInputs, gather_position
from circuitlab.acdc.batch import EdgeMask, PatchContext, check_mask
from circuitlab.acdc.graph import Block
from circuitlab.acdc.metrics import get_metric
from circuitlab.acdc.patch import PatchModel, _blocks, _unembed, source_start


@dataclass(eq=False)
class GradientProbe:
    """Gives every destination its own input ``x + z`` — ``x`` what the forward computed for
    it (the residual, or the masked mix of a patched run), ``z = 0`` ``[E, B, n_dests, S, d]``
    requiring grad (one per block, made on first use) — and replaces the outputs of the blocks
    in ``outputs`` (keyed by block offset) with fixed values."""

    outputs: dict[int, Tensor] = field(default_factory=dict)
    z: dict[int, Tensor] = field(default_factory=dict)

    def inputs(self, block: Block, x: DestInputs) -> DestInputs:
        own = _every_destination(x, block.n_dests)
        z = self.z.get(block.offset)
        if z is None:
            z = torch.zeros_like(own, requires_grad=True)
            self.z[block.offset] = z
        return DestInputs(x.base, list(range(block.n_dests)), own + z)

    def output(self, block: Block, out: Tensor) -> Tensor:
        fixed = self.outputs.get(block.offset)
        return out if fixed is None else fixed.expand_as(out)


def _every_destination(x: DestInputs, n_dests: int) -> Tensor:
    """``[E, B, n_dests, S, d]``: each destination's input, shared ``base`` broadcast."""
    base = x.base[:, :, None]
    if x.own is None:
        return base.expand(-1, -1, n_dests, -1, -1)
    if x.rows == list(range(n_dests)):
        return x.own
    full = base.expand(x.own.shape[0], -1, n_dests, -1, -1).clone()
    full[:, :, x.rows] = x.own
    return full


@contextmanager
def frozen(pm: PatchModel) -> Iterator[PatchModel]:
    """``pm`` with no parameter requiring grad, for the span of the ``with``: the HF model's
    parameters are switched off (and restored after: LRP needs them on,
    `circuitlab.lrp.attribution`) and the per-head weights, which are views built while they
    required grad, are detached. A backward to destination inputs then keeps no tensor that
    only a weight gradient needs (the input of every linear map)."""
    params = list(pm.loaded.model.parameters())
    flags = [p.requires_grad for p in params]

    def det(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach()

    layers = tuple(
        replace(lw, wq=lw.wq.detach(), wk=lw.wk.detach(), wv=lw.wv.detach(), wo=lw.wo.detach(),
                bq=det(lw.bq), bk=det(lw.bk), bv=det(lw.bv), bo=det(lw.bo))
        for lw in pm.layers
    )  # fmt: skip
    try:
        for p in params:
            p.requires_grad_(False)
        yield replace(pm, weights=replace(pm.weights, layers=layers))
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


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
    src = ctx.clean_src[None, :, : source_start(ctx.graph, 0)]
    resid = ctx.clean_resid[0][None]
    if embed is not None:
        src, resid = embed[None, :, None], embed[None]
    value, grads, _ = _probe_run(ctx, metric, GradientProbe(outputs or {}), src, resid, None)
    return float(value[0]), {o: g[0] for o, g in grads.items()}


def masked_dest_gradients(
    ctx: PatchContext, mask: Tensor, metric: str = "logit_diff"
) -> tuple[dict[int, Tensor], Tensor]:
    """∂metric/∂dest_in per block offset, ``[E, B, n_dests, S, d]``, of the forward of the
    batch with the ``[E, n_edges]`` mask patched (each of the E edge sets its own metric), and
    the source outputs ``[E, B, n_sources, S, d]`` of those runs (detached). With them the
    gradient of an edge's mask at any mask value is ``⟨ablated − current source,
    ∂metric/∂dest_in⟩`` (`edge_scores`), with no per-edge tensor kept for the backward."""
    src = ctx.clean_src[None, :, : source_start(ctx.graph, 0)]
    resid = ctx.clean_resid[0][None]
    flat = check_mask(mask.detach(), ctx.graph, ctx.model.device, ctx.model.dtype)
    _, grads, sources = _probe_run(ctx, metric, GradientProbe(), src, resid, flat)
    return grads, sources


def _probe_run(
    ctx: PatchContext,
    metric: str,
    probe: GradientProbe,
    src: Tensor,
    resid: Tensor,
    flat: EdgeMask | None,
) -> tuple[Tensor, dict[int, Tensor], Tensor]:
    """One forward from block 0 with ``probe`` at every destination (``flat``: the patched
    ``[E, n_edges]`` mask, or None), parameters frozen: (metric ``[E]``, the gradient at each
    block's destinations, every source's output, detached)."""
    with frozen(ctx.model) as pm, torch.enable_grad():
        ablated = None if flat is None else ctx.ablated
        src, resid = _blocks(pm, ctx.positional, ablated, flat, src, resid, 0, probe=probe)
        logits = _unembed(pm, ctx.positional, ablated, flat, src, resid, False, probe=probe)
        value = get_metric(metric)(logits, ctx)
        offsets = sorted(probe.z)
        zs = [probe.z[o] for o in offsets]
        # a block whose outputs are replaced does not reach the metric: zero gradient
        grads = torch.autograd.grad(value.sum(), zs, allow_unused=True, materialize_grads=True)
    return value.detach(), dict(zip(offsets, grads, strict=True)), src.detach()


def edge_scores(ctx: PatchContext, grads: dict[int, Tensor], sources: Tensor) -> Tensor:
    """``[n_edges]`` in float32, storage order: per edge ``Σ ⟨ablated[b, src, s] −
    sources[e, b, src, s], grads[dst][e, b, s]⟩`` over runs ``e``, prompts ``b`` and positions
    ``s`` (``Resid End`` at each answer position). ``sources`` are the current source outputs
    ``[(E,) B, n_sources, S, d]`` of the runs whose destination gradients are ``grads``
    (``[(E,) B, n_dests, S, d]`` per block offset): the clean ones for a fixed difference.

    The difference and the products are taken in float32 one prompt at a time, so on a bf16
    model only the gradients themselves carry bf16 rounding, and the transient is one prompt's
    ``[E, n_sources, S, d]`` in float32."""
    graph = ctx.graph
    end = graph.end_block
    src = sources if sources.dim() == 5 else sources[None]
    out = torch.empty(graph.n_edges, dtype=torch.float32, device=src.device)
    ablated = ctx.ablated.expand(src.shape[1], -1, src.shape[3], -1)  # [B, n, S, d], a view
    for block in graph.blocks:
        g = grads[block.offset]
        g = g if g.dim() == 5 else g[None]  # [E, B, n_dests, S, d]
        cur, abl = src[:, :, : block.n_sources], ablated[:, : block.n_sources]
        if block.offset == end.offset:  # the answer position only
            cur = gather_position(cur, ctx.positional.last, dim=3, batch_axis=1)
            abl = gather_position(abl, ctx.positional.last, dim=2, batch_axis=0)
        s = torch.zeros(block.n_dests, block.n_sources, dtype=torch.float32, device=src.device)
        for b in range(src.shape[1]):
            delta = abl[b].float() - cur[:, b].float()  # [E, n, S, d]
            s += torch.einsum("ensd,ersd->rn", delta, g[:, b].float())
        out[block.offset : block.stop] = s.reshape(-1)
    return out


def prompt_slices(ctx: PatchContext, size: int) -> Iterator[PatchContext]:
    """``ctx`` cut into contexts of at most ``size`` consecutive prompts (views, no copies;
    ``ctx`` itself when it has no more). Every metric is a mean over prompts, so a quantity
    linear in the metric is the sum over slices weighted by ``len(slice) / len(ctx.batch)``."""
    n = len(ctx.batch)
    if size >= n:
        yield ctx
        return
    for start in range(0, n, size):
        rows = slice(start, min(start + size, n))
        yield ctx.prompts(rows)
