"""One block of the patch layer: each destination's input (the residual plus its patched
edges' ablated-minus-current differences, computed around the mask's majority) and the
per-head attention over those inputs (`head_outputs`: only some heads, for incremental ACDC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from circuitlab.acdc.batch import EdgeMask, PatchContext, Positional, mix_operands
from circuitlab.acdc.graph import Block
from circuitlab.acdc.weights import LayerWeights
from circuitlab.models.adapters import ModelDims


def gather_position(x: Tensor, last: Tensor, dim: int, batch_axis: int) -> Tensor:
    """``x`` cut to each prompt's position ``last[b]`` along ``dim`` (size 1 kept);
    ``batch_axis`` is the axis indexed by ``b``."""
    shape = [1] * x.dim()
    shape[batch_axis] = last.shape[0]
    size = list(x.shape)
    size[dim] = 1
    return x.gather(dim, last.view(shape).expand(size))


def append_sources(src: Tensor, new: Tensor, capacity: int) -> Tensor:
    """``src`` ``[E|1, B, n, S, d]`` followed by ``new`` along the source axis, broadcasting
    the edge-set axis. ``capacity``: the number of sources the forward will hold.

    Without autograd the sources live in one buffer ``[E, B, capacity, S, d]``, allocated on
    the first append and written block by block, ``src`` being a view of its first ``n``
    sources: a forward copies each source output once, where concatenating would copy all
    earlier ones on every block and briefly hold two copies of them. The buffer records how
    far it is written (``_SOURCES_FILLED``) and is extended only from exactly that prefix, so
    no earlier view — a clean cache, a branch of the same prefix — ever sees a write. With
    autograd (an in-place write would invalidate saved tensors) each append concatenates."""
    n_sets = max(src.shape[0], new.shape[0])
    n, k = src.shape[2], new.shape[2]
    if torch.is_grad_enabled() and (src.requires_grad or new.requires_grad):
        src = src.expand(n_sets, *src.shape[1:])
        return torch.cat([src, new.expand(n_sets, *new.shape[1:])], dim=2)
    buf = src._base
    if not (
        buf is not None
        and getattr(buf, _SOURCES_FILLED, None) == n
        and buf.shape[0] == n_sets
        and buf.shape[2] >= n + k
        and src.data_ptr() == buf.data_ptr()
    ):
        buf = src.new_empty(n_sets, src.shape[1], max(capacity, n + k), *src.shape[3:])
        buf[:, :, :n] = src
    buf[:, :, n : n + k] = new
    setattr(buf, _SOURCES_FILLED, n + k)
    return buf[:, :, : n + k]


#: the attribute on an `append_sources` buffer: how many of its sources are written
_SOURCES_FILLED = "_circuitlab_sources_filled"


@dataclass(frozen=True, eq=False)
class DestInputs:
    """The inputs of one block group's destinations: ``base`` ``[E|1, B, S, d]`` is every
    destination's input except the destinations ``rows`` (indices), whose inputs are ``own``
    ``[E, B, len(rows), S, d]``. Destinations that share ``base`` are normalised and
    projected once (`_attention`)."""

    base: Tensor
    rows: list[int] | None = None
    own: Tensor | None = None

    def single(self) -> Tensor:
        """The input of a one-destination group (an MLP, ``Resid End``): ``[E|1, B, S, d]``."""
        return self.base if self.own is None else self.own[:, :, 0]


def dest_inputs(
    resid: Tensor, src: Tensor, ablated: Tensor | None, mask: EdgeMask | None, block: Block
) -> DestInputs:
    """Residual plus Σ m · (ablated − current) per destination of ``block``, computed around
    the mask's majority: with ``c`` each source's most common mask value over the
    destinations, ``base = resid + Σ c · δ`` is shared and only destinations whose row
    differs from ``c`` get their own input — so a block where nearly every edge is patched
    (late in an ACDC sweep) costs about as much as one where none is. Which rows and columns
    differ is known on the host before the forward (`EdgeMask.split`). A mask that requires
    grad takes the dense path (every destination its own input, gradients for every entry)."""
    m = None if mask is None else mask.block(block)
    if m is None or ablated is None:
        return DestInputs(resid)
    n = src.shape[2]
    if m.requires_grad:
        delta = ablated[:, :n] - src  # [E|1, B, n, S, d]
        own = resid[:, :, None] + _mix(m, delta)
        return DestInputs(resid, list(range(m.shape[1])), own)
    split = mask.split(block)
    base = resid
    if split.majority is not None:  # Σ c·(ablated − src), as two vector–matrix products
        c = split.majority.to(device=resid.device, dtype=resid.dtype)  # 0/1: exact
        base = resid + _weighted_sum(c, ablated[:, :n]) - _weighted_sum(c, src)
    if not split.rows:
        return DestInputs(base)
    r = split.residual.to(device=m.device)[:, split.rows]  # m − c, from the host
    if split.all_cols:  # every source differs somewhere: no gather
        delta = ablated[:, :n] - src
    else:
        cols = split.cols.to(src.device)
        r = r[:, :, cols]
        delta = ablated[:, cols] - src[:, :, cols]
    own = base[:, :, None] + _mix(r, delta)
    return DestInputs(base, split.rows, own)


def _weighted_sum(c: Tensor, x: Tensor) -> Tensor:
    """``Σ_n c[n] · x[..., n, :, :]`` for ``x`` ``[..., n, S, d]`` → ``[..., S, d]``."""
    *lead, n, s, d = x.shape
    return torch.matmul(c, x.reshape(*lead, n, s * d)).reshape(*lead, s, d)


def _mix(m: Tensor, x: Tensor) -> Tensor:
    """``m`` ``[E|1, R, n]`` times ``x`` ``[E|1, B, n, S, d]`` over ``n`` → ``[E, B, R, S, d]``
    (one batched matrix product over the flattened ``S·d``)."""
    e, b, n, s, d = x.shape
    mm, xx = mix_operands(m, x)
    out = torch.matmul(mm[:, None], xx.reshape(e, b, n, s * d))  # [E, B, R, S·d]
    return out.reshape(*out.shape[:3], s, d).to(x.dtype)


def attention(
    lw: LayerWeights,
    x: DestInputs,
    positional: Positional,
    dims: ModelDims,
    *,
    answer: bool = False,
) -> Tensor:
    """Per-head attention outputs ``[E, B, H, S, d]`` (without the output bias) from the
    destination inputs of the block's Q (``0..H-1``), K (``H..H+G-1``) and V heads; with
    ``answer`` only the answer position's queries (``[E, B, H, 1, d]``)."""
    h, g = dims.n_heads, dims.n_kv_heads
    base = lw.ln_attn(x.base)
    own = lw.ln_attn(x.own) if x.own is not None else None
    q = _project(base, own, x.rows, 0, lw.wq, lw.bq)
    k = _project(base, own, x.rows, h, lw.wk, lw.bk)
    v = _project(base, own, x.rows, h + g, lw.wv, lw.bv)
    n_sets = max(q.shape[0], k.shape[0], v.shape[0])  # heads with own inputs have all E sets
    q, k, v = (t.expand(n_sets, *t.shape[1:]) for t in (q, k, v))
    q, k, bias = _positions(q, k, positional, lw.window, answer=answer)
    e, b, _, s, hd = q.shape
    q = q.reshape(e, b, g, h // g, s, hd)
    scores = torch.matmul(q, k[:, :, :, None].transpose(-1, -2)) * lw.scaling
    scores = scores + bias[None, :, None, None]
    # softmax in float32 at least, as HF's eager attention (float64 stays float64)
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    probs = probs.to(q.dtype)
    z = torch.matmul(probs, v[:, :, :, None]).reshape(probs.shape[0], b, h, s, hd)
    return torch.einsum("ebhsk,hdk->ebhsd", z, lw.wo)


def _positions(
    q: Tensor, k: Tensor, positional: Positional, window: int | None, *, answer: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Queries and keys ``[E, B, n, S, k]`` with rotary positions applied (when the model has
    them), and the additive attention bias ``[B, S | 1, S]``; with ``answer`` the queries and
    the bias at each prompt's answer position only."""
    if positional.cos is not None and positional.sin is not None:
        cos, sin = positional.cos[None, :, None], positional.sin[None, :, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
    bias = positional.attn_bias[window]  # [B, S, S]
    if answer:
        q = gather_position(q, positional.last, dim=3, batch_axis=1)
        bias = gather_position(bias, positional.last, dim=1, batch_axis=0)
    return q, k, bias


def _project(
    base: Tensor,
    own: Tensor | None,
    rows: list[int] | None,
    first: int,
    w: Tensor,
    b: Tensor | None,
) -> Tensor:
    """Per-head projections ``[E, B, n, S, k]`` of the heads ``first..first+n-1`` of a block's
    destinations (``w`` ``[n, k, d]``): every head from the normalised ``base`` ``[E|1, B, S, d]``
    in one matrix product, then the heads among ``rows`` from their own inputs ``own``."""
    n, k, d = w.shape
    y = torch.nn.functional.linear(base, w.reshape(n * k, d))  # [E|1, B, S, n·k]
    y = y.unflatten(-1, (n, k)).transpose(2, 3)  # [E|1, B, n, S, k]
    mine = [(j, r - first) for j, r in enumerate(rows or ()) if first <= r < first + n]
    if mine and own is not None:
        at = [j for j, _ in mine]
        heads = [i for _, i in mine]
        yo = torch.einsum("ebrsd,rkd->ebrsk", own[:, :, at], w[heads])
        y = y.expand(yo.shape[0], *y.shape[1:]).clone()
        y[:, :, heads] = yo
    return y if b is None else y + b[:, None, :]


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def head_outputs(
    ctx: PatchContext,
    flat: Tensor,
    layer: int,
    heads: Sequence[int],
    clean_delta: Tensor,
    *,
    answer: bool = False,
) -> Tensor:
    """The outputs ``[E, B, len(heads), S | 1, d]`` of some heads of block ``layer`` under
    the ``[E, n_edges]`` mask ``flat``, when no edge into an earlier block is patched (so the
    block's sources are the clean ones): only these heads' Q inputs and their KV groups' K and
    V inputs are formed, normalised and projected. ``clean_delta`` is ``ablated − clean_src``
    (`PatchContext`); ``answer``: queries at the answer position only (``S = 1``)."""
    pm = ctx.model
    lw, graph = pm.layers[layer], pm.graph
    h, g = pm.dims.n_heads, pm.dims.n_kv_heads
    per = h // g
    groups = sorted({hh // per for hh in heads})
    rows = [*heads, *(h + gg for gg in groups), *(h + g + gg for gg in groups)]
    block = graph.attn_block(layer)
    m = flat[:, block.offset : block.stop].reshape(flat.shape[0], block.n_dests, block.n_sources)
    resid = ctx.clean_resid[layer][None, :, None]  # [1, B, 1, S, d]
    x = lw.ln_attn(resid + _mix(m[:, rows], clean_delta[None, :, : block.n_sources]))
    nh, ng = len(heads), len(groups)
    q = torch.einsum("ebrsd,rkd->ebrsk", x[:, :, :nh], lw.wq[list(heads)])
    k = torch.einsum("ebrsd,rkd->ebrsk", x[:, :, nh : nh + ng], lw.wk[groups])
    v = torch.einsum("ebrsd,rkd->ebrsk", x[:, :, nh + ng :], lw.wv[groups])
    if lw.bq is not None:
        q = q + lw.bq[list(heads)][:, None, :]
    if lw.bk is not None:
        k = k + lw.bk[groups][:, None, :]
    if lw.bv is not None:
        v = v + lw.bv[groups][:, None, :]
    q, k, bias = _positions(q, k, ctx.positional, lw.window, answer=answer)
    kv = [groups.index(hh // per) for hh in heads]  # each head's KV group among `groups`
    k, v = k[:, :, kv], v[:, :, kv]
    scores = torch.matmul(q, k.transpose(-1, -2)) * lw.scaling + bias[None, :, None]
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    z = torch.matmul(probs.to(q.dtype), v)  # [E, B, nh, S|1, hd]
    return torch.einsum("ebhsk,hdk->ebhsd", z, lw.wo[list(heads)])
