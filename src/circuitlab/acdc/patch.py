"""The patch layer: an own forward pass over the edge graph, built from the HF model's weights.

Every destination's input is the sum of its sources' outputs (plus the attention output
biases of earlier blocks, which belong to no source), each edge mixing the current run's
source output with the ablated one by its mask value ``m``::

    dest_in = Σ_src [(1 - m) · src_out_current + m · src_out_ablated] + biases

— auto-circuit's semantics: a patched edge (``m = 1``) carries the ablated source's
activation, an unpatched edge (``m = 0``) the current run's. Each query head's Q input and
each KV head's K and V inputs are normalised separately by the block's attention norm, so an
edge into ``A{l}.{h}.Q`` changes that head's queries only.

What is reused from the HF model, unchanged: the embeddings (Gemma's sqrt(d) scale lives in
its embedding module), the norm modules, the MLP modules, the final norm, the unembedding and
the rotary embedding module (cos/sin). Attention is recomputed per head from the projection
weights the adapter returns (q/k/v/o; GPT-2's fused ``c_attn`` split by the adapter), with the
attention module's own ``scaling`` and the config's sliding window. With no edge patched the
logits equal the HF model's (tested for every supported architecture).

**Batches are right-padded** (`circuitlab.prompts.encode_rows`): positions are ``0..S-1``,
real tokens never attend to padding, and each prompt's answer position is its last real
token. Clean and corrupt prompts have the same length per row (checked when encoding).

**Masks** are float tensors over the graph's edges in storage order: ``[n_edges]`` (one edge
set) or ``[E, n_edges]`` (E edge sets, evaluated in one forward by folding E into the batch;
logits come back ``[E, B, V]``). A mask with ``requires_grad`` gives gradients w.r.t. every
edge (edge attribution patching).

**Caching and resuming**: `prepare` runs the clean batch once and keeps every source's output
and the residual stream at the start of every block; `forward(..., start_layer=l)` starts at
block ``l`` from those cached values, which is exact when no edge into a destination of a
block ``< l`` is patched (checked).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import torch
from torch import Tensor, nn

from circuitlab.acdc.graph import Block, Graph, build_graph, head_source_index
from circuitlab.acdc.metrics import MetricFn, get_metric
from circuitlab.errors import ConfigError, DatasetError, ModelError
from circuitlab.models.adapters import ModelDims
from circuitlab.models.loading import LoadedModel
from circuitlab.prompts import PromptBatch, encode_rows
from circuitlab.types import Ablation, TaskRow

ABLATIONS: tuple[str, ...] = get_args(Ablation)


# ------------------------------------------------------------------------ model
@dataclass(frozen=True, eq=False)
class LayerWeights:
    """One block's modules and per-head weights (views of, or reshaped, HF parameters)."""

    ln_attn: nn.Module
    ln_mlp: nn.Module
    mlp: nn.Module
    wq: Tensor  # [n_heads, head_dim, d_model]
    bq: Tensor | None  # [n_heads, head_dim]
    wk: Tensor  # [n_kv_heads, head_dim, d_model]
    bk: Tensor | None
    wv: Tensor  # [n_kv_heads, head_dim, d_model]
    bv: Tensor | None
    wo: Tensor  # [n_heads, d_model, head_dim]
    bo: Tensor | None  # [d_model]
    scaling: float
    window: int | None  # sliding-window size, None for full attention


@dataclass(frozen=True, eq=False)
class PatchModel:
    """A loaded HF model seen as an edge graph; build it with `patchable`. Never mutates the
    model: it only reads its weights and calls its embedding, norm and MLP modules."""

    loaded: LoadedModel
    graph: Graph
    layers: tuple[LayerWeights, ...] = field(repr=False)
    embed: nn.Module = field(repr=False)
    pos_embed: nn.Module | None = field(repr=False)
    rotary: nn.Module | None = field(repr=False)
    final_norm: nn.Module = field(repr=False)
    unembed: nn.Module = field(repr=False)

    @property
    def dims(self) -> ModelDims:
        return self.loaded.dims

    @property
    def device(self) -> torch.device:
        return self.layers[0].wq.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].wq.dtype


def patchable(loaded: LoadedModel) -> PatchModel:
    """The patch layer over a loaded model. Raises ModelError for an architecture whose
    forward pass it cannot reproduce exactly (norms on attention/MLP outputs, per-head q/k
    norms, soft-capping, unknown attention layer types), naming the feature. A model loaded
    with the transformer_lens backend gets the same interface on its bridge's hooks
    (`circuitlab.acdc.hooked`)."""
    if loaded.adapter is None:  # the transformer_lens backend: patching on the bridge's hooks
        from circuitlab.acdc.hooked import hooked

        return hooked(loaded)  # type: ignore[return-value]
    model, adapter = loaded.model, loaded.adapter
    _check_supported(loaded)
    dims = loaded.dims
    layers = tuple(_layer_weights(loaded, layer) for layer in range(dims.n_layers))
    rotary = None
    if adapter.pos_embed is None:
        rotary = getattr(getattr(model, "base_model", model), "rotary_emb", None)
        if not isinstance(rotary, nn.Module):
            raise ModelError(
                f"{type(model).__name__}: no learned positions and no `rotary_emb` module on "
                "the base model; the patch layer cannot build position encodings for it"
            )
    return PatchModel(
        loaded=loaded,
        graph=build_graph(dims),
        layers=layers,
        embed=adapter.root(model, "embed"),
        pos_embed=adapter.root(model, "pos_embed") if adapter.pos_embed else None,
        rotary=rotary,
        final_norm=adapter.root(model, "final_norm"),
        unembed=adapter.root(model, "unembed"),
    )


def _check_supported(loaded: LoadedModel) -> None:
    adapter, config = loaded.adapter, loaded.model.config
    reasons = []
    if adapter.has("ln_attn_post") or adapter.has("ln_mlp_post"):
        reasons.append("norms on the attention/MLP outputs make head outputs non-additive")
    if adapter.has("q_norm") or adapter.has("k_norm"):
        reasons.append("per-head q/k norms are not implemented")
    if adapter.logit_softcap(config) or adapter.attn_logit_softcap(config):
        reasons.append("logit soft-capping is not implemented")
    kinds = set(getattr(config, "layer_types", None) or ())
    if kinds - {"full_attention", "sliding_attention"}:
        reasons.append(f"attention layer types {sorted(kinds)} are not implemented")
    if len({p.device for p in loaded.model.parameters()}) > 1:
        reasons.append("the model is sharded over several devices (device_map); load it on one")
    if reasons:
        arch = type(loaded.model).__name__
        raise ModelError(
            f"the ACDC patch layer cannot reproduce {arch} exactly: {'; '.join(reasons)}. "
            "Supported: Llama, Mistral, Qwen2, Gemma (1) and GPT-2; use one of those for "
            "ACDC/EAP/head pruning"
        )


def _layer_weights(loaded: LoadedModel, layer: int) -> LayerWeights:
    model, adapter, dims = loaded.model, loaded.adapter, loaded.dims
    h, g, hd, d = dims.n_heads, dims.n_kv_heads, dims.head_dim, dims.d_model

    def w(site: str, n: int) -> tuple[Tensor, Tensor | None]:
        weight = adapter.proj_weight(model, layer, site)
        bias = adapter.proj_bias(model, layer, site)
        if weight.shape != (n * hd, d):
            raise ModelError(
                f"layer {layer} {site}-projection has shape {tuple(weight.shape)}, "
                f"expected {(n * hd, d)} from the config"
            )
        return weight.reshape(n, hd, d), (bias.reshape(n, hd) if bias is not None else None)

    wq, bq = w("q", h)
    wk, bk = w("k", g)
    wv, bv = w("v", g)
    wo = adapter.proj_weight(model, layer, "o")
    if wo.shape != (d, h * hd):
        raise ModelError(f"layer {layer} o-projection has shape {tuple(wo.shape)}")
    attn = adapter.module(model, layer, "attn")
    scaling = getattr(attn, "scaling", None)
    if not isinstance(scaling, int | float):
        raise ModelError(
            f"{type(attn).__name__} has no numeric `scaling`; cannot reproduce its scores"
        )
    return LayerWeights(
        ln_attn=adapter.module(model, layer, "ln_attn"),
        ln_mlp=adapter.module(model, layer, "ln_mlp"),
        mlp=adapter.module(model, layer, "mlp"),
        wq=wq,
        bq=bq,
        wk=wk,
        bk=bk,
        wv=wv,
        bv=bv,
        wo=wo.reshape(d, h, hd).permute(1, 0, 2),
        bo=adapter.proj_bias(model, layer, "o"),
        scaling=float(scaling),
        window=_window(model.config, layer),
    )


def _window(config: Any, layer: int) -> int | None:
    size = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not size or (types is not None and types[layer] != "sliding_attention"):
        return None
    return int(size)


# ---------------------------------------------------------------------- batches
def encode_pairs(rows: Sequence[TaskRow], tokenizer: Any) -> PromptBatch:
    """Rows → a right-padded `PromptBatch` (clean and corrupt prompts of equal length per
    row, single-token answers). DatasetError for no rows or rows that fail those checks."""
    if not rows:
        raise DatasetError(
            "no prompt rows to patch with; ACDC, EAP and head pruning need at least one row"
        )
    return encode_rows(rows, tokenizer)


@dataclass(frozen=True, eq=False)
class Positional:
    """Per-batch constants of the forward: attention biases per window size, cos/sin."""

    attn_bias: dict[int | None, Tensor]  # window → additive [B, S, S] bias (0 or dtype min)
    cos: Tensor | None  # [B, S, head_dim]
    sin: Tensor | None
    last: Tensor  # [B] answer positions


@dataclass(frozen=True, eq=False)
class PatchContext:
    """A batch prepared for patching: the clean run's cache and the ablated sources.

    ``clean_src`` ``[B, n_sources, S, d]`` holds every source's clean output and
    ``clean_resid`` ``[n_layers + 1, B, S, d]`` the clean residual stream at the start of each
    block (index ``n_layers``: the input of ``Resid End``); ``ablated`` is
    ``[B | 1, n_sources, S | 1, d]`` (broadcast over prompts for mean, and positions for zero).
    ``n_forward`` counts the full forward passes `prepare` spent; ``seconds`` its wall time.
    """

    model: PatchModel
    batch: PromptBatch
    ablation: Ablation
    positional: Positional = field(repr=False)
    clean_src: Tensor = field(repr=False)
    clean_resid: Tensor = field(repr=False)
    ablated: Tensor = field(repr=False)
    clean_logits: Tensor = field(repr=False)  # [B, vocab] at the answer position
    n_forward: int = 0
    seconds: float = 0.0

    @property
    def graph(self) -> Graph:
        return self.model.graph


def prepare(
    pm: PatchModel,
    batch: PromptBatch,
    ablation: Ablation = "resample",
    *,
    reference: PromptBatch | None = None,
) -> PatchContext:
    """Run the clean batch once (and the corrupt batch for ``resample``) and cache what
    patched forwards need.

    Ablations: ``resample`` — each prompt's corrupt prompt's source outputs; ``mean`` — the
    mean over prompts, per position, of the clean source outputs of ``reference`` (default:
    this batch; padding excluded); ``zero`` — zeros.
    """
    if ablation not in ABLATIONS:
        raise ConfigError(f"ablation {ablation!r} is unknown; choose one of {ABLATIONS}")
    if len(batch) == 0:
        raise DatasetError("the prompt batch is empty; patching needs at least one prompt")
    if ablation == "resample":
        batch.require_corrupt("resample ablation")
    if not isinstance(pm, PatchModel):  # the transformer_lens backend
        from circuitlab.acdc import hooked

        return hooked.prepare(pm, batch, ablation, reference=reference)  # type: ignore[return-value]
    start = time.perf_counter()
    batch = batch.to(pm.device)
    n_forward = 1
    with torch.no_grad():
        positional = _positional(pm, batch.input_ids, batch.attention_mask, batch.last)
        clean_src, clean_resid, clean_logits = _record(pm, batch.input_ids, positional)

        def sources(ids: Tensor, attention_mask: Tensor, last: Tensor) -> Tensor:
            pos = (
                positional
                if attention_mask is batch.attention_mask
                else _positional(pm, ids, attention_mask, last)
            )
            return _record(pm, ids, pos)[0]

        ablated, n_more = ablated_sources(sources, batch, ablation, clean_src, reference)
        n_forward += n_more
    return PatchContext(
        model=pm,
        batch=batch,
        ablation=ablation,
        positional=positional,
        clean_src=clean_src,
        clean_resid=clean_resid,
        ablated=ablated,
        clean_logits=clean_logits,
        n_forward=n_forward,
        seconds=time.perf_counter() - start,
    )


def prepare_rows(
    pm: PatchModel,
    rows: Sequence[TaskRow],
    ablation: Ablation = "resample",
    *,
    reference_rows: Sequence[TaskRow] | None = None,
) -> PatchContext:
    """`encode_pairs` then `prepare` (``reference_rows`` only for ``mean`` ablation)."""
    tok = pm.loaded.tokenizer
    reference = encode_pairs(reference_rows, tok) if reference_rows is not None else None
    return prepare(pm, encode_pairs(rows, tok), ablation, reference=reference)


def _positional(
    pm: PatchModel, input_ids: Tensor, attention_mask: Tensor, last: Tensor
) -> Positional:
    b, s = input_ids.shape
    mask = attention_mask.bool()
    check_batch(attention_mask, last)
    pos = torch.arange(s, device=mask.device)
    causal = pos[None, :] <= pos[:, None]  # [query, key]
    bias = {}
    for window in {lw.window for lw in pm.layers}:
        allowed = causal if window is None else causal & (pos[:, None] - pos[None, :] < window)
        allowed = allowed[None] & mask[:, None, :]
        zeros = torch.zeros(b, s, s, dtype=pm.dtype, device=mask.device)
        bias[window] = zeros.masked_fill(~allowed, torch.finfo(pm.dtype).min)
    cos = sin = None
    if pm.rotary is not None:
        probe = torch.zeros(1, dtype=pm.dtype, device=mask.device)
        cos, sin = pm.rotary(probe, pos[None].expand(b, s))
    return Positional(attn_bias=bias, cos=cos, sin=sin, last=last.to(mask.device))


def check_batch(attention_mask: Tensor, last: Tensor) -> None:
    """DatasetError unless the batch is right-padded, every prompt has a token and ``last``
    is each prompt's last real position (what both patch layers assume)."""
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    right_padded = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    if bool((lengths == 0).any()) or not torch.equal(mask, right_padded):
        raise DatasetError(
            "the patch layer needs right-padded batches with at least one token per prompt "
            "(build them with circuitlab.prompts.encode_rows)"
        )
    if not torch.equal(last.to(lengths.device), lengths - 1):
        raise DatasetError("batch.last must be each prompt's last real position")


def _masked_mean(src: Tensor, attention_mask: Tensor) -> Tensor:
    """``[R, n, S, d]`` → ``[1, n, S, d]``: per position, the mean over prompts that reach it."""
    w = attention_mask.to(src.dtype)[:, None, :, None]
    return (src * w).sum(0, keepdim=True) / w.sum(0, keepdim=True).clamp(min=1)


def ablated_sources(
    sources: Callable[[Tensor, Tensor, Tensor], Tensor],
    batch: PromptBatch,
    ablation: str,
    clean_src: Tensor,
    reference: PromptBatch | None,
) -> tuple[Tensor, int]:
    """The ablated source outputs ``[B | 1, n_sources, S | 1, d]`` of ``prepare`` and the
    forwards they cost; ``sources(ids, attention_mask, last)`` records an unpatched run's
    source outputs (the native patch layer's or the TransformerLens hooks')."""
    if ablation == "resample":
        return sources(batch.corrupt_ids, batch.attention_mask, batch.last), 1
    if ablation == "zero":
        return clean_src.new_zeros(1, clean_src.shape[1], 1, clean_src.shape[-1]), 0
    if reference is None:
        return _masked_mean(clean_src, batch.attention_mask), 0
    width = clean_src.shape[2]
    reference = reference.to(clean_src.device)
    if reference.input_ids.shape[1] < width:
        raise ConfigError(
            f"mean ablation: the reference prompts are at most {reference.input_ids.shape[1]} "
            f"tokens long but the batch has {width} positions; give reference prompts at least "
            "as long as the longest prompt (or no reference: the batch's own mean)"
        )
    src = sources(reference.input_ids, reference.attention_mask, reference.last)
    return _masked_mean(src, reference.attention_mask)[:, :, :width], 1


# ---------------------------------------------------------------------- forward
def forward(
    ctx: PatchContext,
    mask: Tensor | None = None,
    *,
    start_layer: int = 0,
    all_positions: bool = False,
    answer_only: bool = False,
    heads: Tensor | None = None,
) -> Tensor:
    """Logits of the clean batch with the masked edges patched.

    ``mask``: None (nothing patched), ``[n_edges]`` or ``[E, n_edges]`` (values in [0, 1],
    1 = patched). Returns ``[B, V]`` (``[E, B, V]`` for a 2-D mask) at each prompt's answer
    position, or ``[(E,) B, S, V]`` with ``all_positions``. ``start_layer`` resumes at that
    block from the clean cache; ConfigError if an edge into an earlier block is patched.
    Autograd is on only when ``mask`` requires grad. ``answer_only`` computes the last block's
    queries and MLP at the answer position only (all the answer logits depend on; the same
    values up to float rounding, a fraction of the last block's cost; fast ACDC uses it).
    ``heads``: the outputs of block ``start_layer``'s heads under this mask, already known
    (`head_outputs`; ``[E|1, B, H, S, d]``, at the answer position only for the last block
    with ``answer_only``): the block's attention is not recomputed.
    """
    pm = ctx.model
    graph = pm.graph
    flat = _check_mask(mask, graph, pm)
    if not isinstance(ctx, PatchContext):  # the transformer_lens backend: one hooked forward
        from circuitlab.acdc import hooked

        logits = hooked.forward(ctx, flat, all_positions=all_positions)
        return logits[0] if mask is None or mask.dim() == 1 else logits
    n_layers = graph.n_layers
    if not 0 <= start_layer <= n_layers:
        raise ConfigError(f"start_layer must be in [0, {n_layers}], got {start_layer}")
    start_block = graph.attn_block(start_layer) if start_layer < n_layers else graph.end_block
    if flat is not None and start_layer > 0 and bool(flat[:, : start_block.offset].any()):
        raise ConfigError(
            f"cannot resume at block {start_layer}: edges into earlier blocks are patched; "
            "resume at the smallest destination block of any patched edge"
        )
    n_sets = 1 if flat is None else flat.shape[0]
    with torch.set_grad_enabled(flat is not None and flat.requires_grad):
        src = ctx.clean_src[None, :, : source_start(graph, start_layer)]
        resid = ctx.clean_resid[start_layer][None]
        if answer_only and not all_positions and start_layer < n_layers:
            src, resid = _blocks(
                pm,
                ctx.positional,
                ctx.ablated,
                flat,
                src,
                resid,
                start_layer,
                n_layers - 1,
                first_heads=heads,
            )
            src, resid, ablated = _last_block_at_answer(
                pm,
                ctx.positional,
                ctx.ablated,
                flat,
                src,
                resid,
                heads=heads if start_layer == n_layers - 1 else None,
            )
            logits = _unembed(pm, ctx.positional, ablated, flat, src, resid, True)[:, :, 0]
        else:
            src, resid = _blocks(
                pm,
                ctx.positional,
                ctx.ablated,
                flat,
                src,
                resid,
                start_layer,
                first_heads=heads,
            )
            logits = _unembed(pm, ctx.positional, ctx.ablated, flat, src, resid, all_positions)
    if logits.shape[0] != n_sets:
        logits = logits.expand(n_sets, *logits.shape[1:])
    return logits[0] if mask is None or mask.dim() == 1 else logits


def _check_mask(mask: Tensor | None, graph: Graph, pm: PatchModel) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dim() not in (1, 2) or mask.shape[-1] != graph.n_edges:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ConfigError(
            f"an edge mask must be a tensor of shape [n_edges] or [E, n_edges] with "
            f"n_edges = {graph.n_edges}; got {got}"
        )
    flat = mask if mask.dim() == 2 else mask[None]
    return flat.to(device=pm.device, dtype=pm.dtype)


def _record(pm: PatchModel, input_ids: Tensor, positional: Positional) -> tuple[Tensor, ...]:
    """An unpatched run: (source outputs, residual at each block start, answer logits)."""
    resid = _embed(pm, input_ids)[None]
    resids: list[Tensor] = [resid]
    src = resid[:, :, None]
    for layer in range(pm.graph.n_layers):
        src, resid = _blocks(pm, positional, None, None, src, resid, layer, stop=layer + 1)
        resids.append(resid)
    logits = _unembed(pm, positional, None, None, src, resid, False)
    return src[0], torch.cat(resids), logits[0]


def _embed(pm: PatchModel, input_ids: Tensor) -> Tensor:
    """The ``Resid Start`` source: token embeddings (+ learned positions)."""
    x = pm.embed(input_ids)
    if pm.pos_embed is not None:
        x = x + pm.pos_embed(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
    return x


def _blocks(
    pm: PatchModel,
    positional: Positional,
    ablated: Tensor | None,
    flat: Tensor | None,
    src: Tensor,
    resid: Tensor,
    start: int,
    stop: int | None = None,
    *,
    first_heads: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run blocks ``start..stop-1``. ``src`` ``[E|1, B, n, S, d]`` are the current outputs of
    the sources before block ``start``, ``resid`` ``[E|1, B, S, d]`` their sum plus biases;
    ``first_heads``: block ``start``'s head outputs, if known. Returns both extended past
    block ``stop - 1``."""
    graph = pm.graph
    for layer in range(start, graph.n_layers if stop is None else stop):
        lw = pm.layers[layer]
        if layer == start and first_heads is not None:
            heads = first_heads
        else:
            x = _dest_inputs(resid, src, ablated, _block_mask(flat, graph.attn_block(layer)))
            heads = _attention(lw, x, positional, pm.dims)  # [E, B, H, S, d]
        src = _append(src, heads)
        resid = resid + heads.sum(2)
        if lw.bo is not None:
            resid = resid + lw.bo
        x = _dest_inputs(resid, src, ablated, _block_mask(flat, graph.mlp_block(layer)))
        out = lw.mlp(lw.ln_mlp(x.single()))
        src = _append(src, out[:, :, None])
        resid = resid + out
    return src, resid


def _unembed(
    pm: PatchModel,
    positional: Positional,
    ablated: Tensor | None,
    flat: Tensor | None,
    src: Tensor,
    resid: Tensor,
    all_positions: bool,
) -> Tensor:
    m = _block_mask(flat, pm.graph.end_block)
    if not all_positions:  # only the answer position: select it before mixing
        b, s = resid.shape[1], resid.shape[2]
        rows, last = torch.arange(b, device=resid.device), positional.last
        resid = resid[:, rows, last][:, :, None]  # [E, B, 1, d]
        src = src.transpose(2, 3)[:, rows, last][:, :, :, None]  # [E, B, n, 1, d]
        if ablated is not None and m is not None:
            full = ablated.expand(b, -1, s, -1)
            ablated = full.transpose(1, 2)[rows, last][:, :, None]  # [B, n, 1, d]
    x = _dest_inputs(resid, src, ablated, m).single()  # [E, B, S | 1, d]
    if not all_positions:
        x = x[:, :, 0]
    return pm.unembed(pm.final_norm(x))


def _last_block_at_answer(
    pm: PatchModel,
    positional: Positional,
    ablated: Tensor,
    flat: Tensor | None,
    src: Tensor,
    resid: Tensor,
    *,
    heads: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The last block with its queries and MLP at each prompt's answer position only (keys and
    values at every position). Returns source outputs, residual and ablated sources, all cut
    to that one position (``S = 1``). ``heads``: the block's head outputs, if known."""
    graph = pm.graph
    layer = graph.n_layers - 1
    lw = pm.layers[layer]
    s = resid.shape[2]
    if heads is None:
        x = _dest_inputs(resid, src, ablated, _block_mask(flat, graph.attn_block(layer)))
        heads = _attention(lw, x, positional, pm.dims, answer=True)  # [E, B, H, 1, d]
    last = positional.last
    src = _gather_position(src, last, dim=3, batch_axis=1)
    resid = _gather_position(resid, last, dim=2, batch_axis=1)
    b = resid.shape[1]
    ablated = _gather_position(ablated.expand(b, -1, s, -1), last, dim=2, batch_axis=0)
    src = _append(src, heads)
    resid = resid + heads.sum(2)
    if lw.bo is not None:
        resid = resid + lw.bo
    x = _dest_inputs(resid, src, ablated, _block_mask(flat, graph.mlp_block(layer)))
    out = lw.mlp(lw.ln_mlp(x.single()))
    return _append(src, out[:, :, None]), resid + out, ablated


def _gather_position(x: Tensor, last: Tensor, dim: int, batch_axis: int) -> Tensor:
    """``x`` cut to each prompt's position ``last[b]`` along ``dim`` (size 1 kept);
    ``batch_axis`` is the axis indexed by ``b``."""
    shape = [1] * x.dim()
    shape[batch_axis] = last.shape[0]
    size = list(x.shape)
    size[dim] = 1
    return x.gather(dim, last.view(shape).expand(size))


def _append(src: Tensor, new: Tensor) -> Tensor:
    """Concatenate source outputs along the source axis, broadcasting the edge-set axis."""
    if src.shape[0] != new.shape[0]:
        n_sets = max(src.shape[0], new.shape[0])
        src = src.expand(n_sets, *src.shape[1:])
        new = new.expand(n_sets, *new.shape[1:])
    return torch.cat([src, new], dim=2)


def _block_mask(flat: Tensor | None, block: Block) -> Tensor | None:
    """A block's ``[E, n_dests, n_sources]`` mask, or None when nothing in it is patched
    (and no gradient is wanted)."""
    if flat is None:
        return None
    m = flat[:, block.offset : block.stop]
    if not m.requires_grad and not bool(m.any()):
        return None
    return m.reshape(m.shape[0], block.n_dests, block.n_sources)


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


def _dest_inputs(
    resid: Tensor, src: Tensor, ablated: Tensor | None, m: Tensor | None
) -> DestInputs:
    """Residual plus Σ m · (ablated − current) per destination, computed around the mask's
    majority: with ``c`` each source's most common mask value over the destinations,
    ``base = resid + Σ c · δ`` is shared and only destinations whose row differs from ``c``
    get their own input — so a block where nearly every edge is patched (late in an ACDC
    sweep) costs about as much as one where none is. A mask that requires grad takes the
    dense path (every destination its own input, gradients for every entry)."""
    if m is None or ablated is None:
        return DestInputs(resid)
    n = src.shape[2]
    if m.requires_grad:
        delta = ablated[:, :n] - src  # [E|1, B, n, S, d]
        own = resid[:, :, None] + _mix(m, delta)
        return DestInputs(resid, list(range(m.shape[1])), own)
    c = (m.sum((0, 1)) * 2 > m.shape[0] * m.shape[1]).to(m.dtype)  # [n] majority (ties: 0)
    r = m - c
    differs = r != 0
    rows = differs.any(2).any(0).nonzero().flatten().tolist()
    base = resid
    if bool(c.any()):  # Σ c·(ablated − src), as two vector–matrix products
        base = resid + _weighted_sum(c, ablated[:, :n]) - _weighted_sum(c, src)
    if not rows:
        return DestInputs(base)
    cols = differs.any(1).any(0).nonzero().flatten()
    delta = ablated[:, cols] - src[:, :, cols]
    own = base[:, :, None] + _mix(r[:, rows][:, :, cols], delta)
    return DestInputs(base, rows, own)


def _weighted_sum(c: Tensor, x: Tensor) -> Tensor:
    """``Σ_n c[n] · x[..., n, :, :]`` for ``x`` ``[..., n, S, d]`` → ``[..., S, d]``."""
    *lead, n, s, d = x.shape
    return torch.matmul(c, x.reshape(*lead, n, s * d)).reshape(*lead, s, d)


def _mix(m: Tensor, x: Tensor) -> Tensor:
    """``m`` ``[E|1, R, n]`` times ``x`` ``[E|1, B, n, S, d]`` over ``n`` → ``[E, B, R, S, d]``
    (one batched matrix product over the flattened ``S·d``)."""
    e, b, n, s, d = x.shape
    out = torch.matmul(m[:, None], x.reshape(e, b, n, s * d))  # [E, B, R, S·d]
    return out.reshape(*out.shape[:3], s, d)


def _attention(
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
        q = _gather_position(q, positional.last, dim=3, batch_axis=1)
        bias = _gather_position(bias, positional.last, dim=1, batch_axis=0)
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


def source_start(graph: Graph, layer: int) -> int:
    """The number of sources before block ``layer`` (all sources for ``layer == n_layers``)."""
    return (
        len(graph.sources)
        if layer >= graph.n_layers
        else head_source_index(layer, 0, graph.n_heads)
    )


def evaluate_masks(
    ctx: PatchContext,
    masks: Tensor,
    metric: str | MetricFn,
    *,
    start_layer: int = 0,
) -> Tensor:
    """The metric of each of E edge sets, ``[E]``, from one forward pass.

    ``masks`` is ``[E, n_edges]`` (or ``[n_edges]`` for one set); ``metric`` a name in
    `circuitlab.acdc.metrics.METRICS` or a function ``(logits [E, B, V], ctx) -> [E]``.
    ``start_layer`` as in `forward`.
    """
    fn = get_metric(metric) if isinstance(metric, str) else metric
    batched = masks if masks.dim() == 2 else masks[None]
    return fn(forward(ctx, batched, start_layer=start_layer), ctx)
