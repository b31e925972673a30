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

The parts: `circuitlab.acdc.weights` reads the model (`read_weights`),
`circuitlab.acdc.batch` holds a prepared batch (`PatchContext`), the checked mask (`EdgeMask`)
and what both patch layers share about batches, `circuitlab.acdc.attention` one block's
destination inputs and heads; this module is the native patch layer (`PatchModel`, built by
`native`) and the entry points of both layers (`prepare`, `forward`, `evaluate_masks`, which
call the backend's own ``prepare``/``forward``, `circuitlab.acdc.backend`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, get_args

import torch
from torch import Tensor

from circuitlab.acdc.attention import (
    DestInputs,
    append_sources,
    attention,
    dest_inputs,
    gather_position,
)
from circuitlab.acdc.batch import (
    EdgeMask,
    PatchContext,
    Positional,
    PreparedBatch,
    ablated_sources,
    check_mask,
    encode_pairs,
    make_positional,
)
from circuitlab.acdc.graph import Block, Graph, build_graph, head_source_index
from circuitlab.acdc.metrics import MetricFn, get_metric
from circuitlab.acdc.weights import LayerWeights, ModelWeights, read_weights
from circuitlab.errors import ConfigError, DatasetError
from circuitlab.models.adapters import ModelDims
from circuitlab.models.loading import LoadedModel
from circuitlab.prompts import PromptBatch
from circuitlab.types import Ablation, TaskRow

if TYPE_CHECKING:
    from circuitlab.acdc.backend import PatchBackend

ABLATIONS: tuple[str, ...] = get_args(Ablation)


class Probe(Protocol):
    """What a gradient probe (`circuitlab.acdc.gradients`) does inside an unpatched forward:
    gives each destination of ``block`` its own input on top of the one the forward computed
    (to take its gradient) and may replace the outputs ``[E|1, B, n, S, d]`` of the sources a
    block writes."""

    def inputs(self, block: Block, x: DestInputs) -> DestInputs: ...

    def output(self, block: Block, out: Tensor) -> Tensor: ...


__all__ = [
    "ABLATIONS",
    "PatchContext",
    "PatchModel",
    "encode_pairs",
    "evaluate_masks",
    "forward",
    "native",
    "prepare",
    "prepare_rows",
    "source_start",
]


@dataclass(frozen=True, eq=False)
class PatchModel:
    """A loaded HF model seen as an edge graph by circuitlab's own patch layer (a
    `circuitlab.acdc.backend.PatchBackend`); build it with `native` (or
    `circuitlab.acdc.backend.patchable`). Never mutates the model: it only reads its weights
    and calls its embedding, norm and MLP modules."""

    #: gradients at each destination's input (`circuitlab.acdc.gradients`)
    supports_dest_gradients: ClassVar[bool] = True
    #: resuming at a block, answer-position-only last blocks, known head outputs
    supports_resume: ClassVar[bool] = True

    loaded: LoadedModel
    graph: Graph
    weights: ModelWeights
    kv_edges: str = "kv_head"

    @property
    def dims(self) -> ModelDims:
        """The sizes the patch layer computes with (`ModelWeights`)."""
        return self.weights.dims

    @property
    def layers(self) -> tuple[LayerWeights, ...]:
        return self.weights.layers

    @property
    def device(self) -> torch.device:
        return self.weights.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    def prepare(
        self, batch: PromptBatch, ablation: Ablation, *, reference: PromptBatch | None = None
    ) -> PatchContext:
        """`prepare` on the native layer (that function checks the arguments)."""
        return _prepare(self, batch, ablation, reference)

    def forward(
        self,
        ctx: PreparedBatch,
        mask: EdgeMask | None,
        *,
        start_layer: int = 0,
        all_positions: bool = False,
        answer_only: bool = False,
        heads: Tensor | None = None,
    ) -> Tensor:
        """`forward` on the native layer, ``[E, ...]`` logits for the checked mask."""
        assert isinstance(ctx, PatchContext)  # prepared by this backend
        return _forward(ctx, mask, start_layer, all_positions, answer_only, heads)


def native(loaded: LoadedModel, *, kv_edges: str = "kv_head") -> PatchModel:
    """The native patch layer over a model loaded with a circuitlab adapter
    (`circuitlab.acdc.weights.read_weights` says what it refuses)."""
    weights = read_weights(loaded, kv_edges=kv_edges)
    return PatchModel(
        loaded=loaded, graph=build_graph(weights.dims), weights=weights, kv_edges=kv_edges
    )


def prepare(
    pm: PatchBackend,
    batch: PromptBatch,
    ablation: Ablation = "resample",
    *,
    reference: PromptBatch | None = None,
) -> PreparedBatch:
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
    return pm.prepare(batch, ablation, reference=reference)


def _prepare(
    pm: PatchModel, batch: PromptBatch, ablation: Ablation, reference: PromptBatch | None
) -> PatchContext:
    start = time.perf_counter()
    batch = batch.to(pm.device)
    n_forward = 1
    with torch.no_grad():
        positional = make_positional(pm.weights, batch.input_ids, batch.attention_mask, batch.last)
        clean_src, clean_resid, clean_logits = _record(pm, batch.input_ids, positional)

        def sources(ids: Tensor, attention_mask: Tensor, last: Tensor) -> Tensor:
            pos = (
                positional
                if attention_mask is batch.attention_mask
                else make_positional(pm.weights, ids, attention_mask, last)
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
    pm: PatchBackend,
    rows: Sequence[TaskRow],
    ablation: Ablation = "resample",
    *,
    reference_rows: Sequence[TaskRow] | None = None,
) -> PreparedBatch:
    """`encode_pairs` then `prepare` (``reference_rows`` only for ``mean`` ablation)."""
    tok = pm.loaded.tokenizer
    reference = encode_pairs(reference_rows, tok) if reference_rows is not None else None
    return prepare(pm, encode_pairs(rows, tok), ablation, reference=reference)


def forward(
    ctx: PreparedBatch,
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
    with ``answer_only``): the block's attention is not recomputed. The mask stays float32 on
    a bf16/fp16 model (`circuitlab.acdc.batch.check_mask`). A backend without resuming
    (``supports_resume``, the TransformerLens hooks) runs every forward in full, which gives
    the same logits.
    """
    pm = ctx.model
    graph = pm.graph
    n_layers = graph.n_layers
    if not 0 <= start_layer <= n_layers:
        raise ConfigError(f"start_layer must be in [0, {n_layers}], got {start_layer}")
    flat = check_mask(mask, graph, pm.device, pm.dtype)
    start_block = graph.attn_block(start_layer) if start_layer < n_layers else graph.end_block
    if flat is not None and start_layer > 0 and flat.patches_in(0, start_block.offset):
        raise ConfigError(
            f"cannot resume at block {start_layer}: edges into earlier blocks are patched; "
            "resume at the smallest destination block of any patched edge"
        )
    logits = pm.forward(
        ctx,
        flat,
        start_layer=start_layer,
        all_positions=all_positions,
        answer_only=answer_only,
        heads=heads,
    )
    return logits[0] if mask is None or mask.dim() == 1 else logits


def _forward(
    ctx: PatchContext,
    flat: EdgeMask | None,
    start_layer: int,
    all_positions: bool,
    answer_only: bool,
    heads: Tensor | None,
) -> Tensor:
    pm = ctx.model
    graph = pm.graph
    n_layers = graph.n_layers
    n_sets = 1 if flat is None else flat.n_sets
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
    return logits


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
    w = pm.weights
    x = w.embed(input_ids)
    if w.pos_embed is not None:
        x = x + w.pos_embed(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
    return x


def _blocks(
    pm: PatchModel,
    positional: Positional,
    ablated: Tensor | None,
    flat: EdgeMask | None,
    src: Tensor,
    resid: Tensor,
    start: int,
    stop: int | None = None,
    *,
    first_heads: Tensor | None = None,
    probe: Probe | None = None,
) -> tuple[Tensor, Tensor]:
    """Run blocks ``start..stop-1``. ``src`` ``[E|1, B, n, S, d]`` are the current outputs of
    the sources before block ``start``, ``resid`` ``[E|1, B, S, d]`` their sum plus biases;
    ``first_heads``: block ``start``'s head outputs, if known; ``probe``: every destination
    reads its own input from it and it may replace a block's outputs
    (`circuitlab.acdc.gradients`). Returns both extended past block ``stop - 1``."""
    graph = pm.graph
    for layer in range(start, graph.n_layers if stop is None else stop):
        lw = pm.layers[layer]
        block = graph.attn_block(layer)
        if layer == start and first_heads is not None:
            heads = first_heads
        else:
            x = dest_inputs(resid, src, ablated, flat, block)
            if probe is not None:
                x = probe.inputs(block, x)
            heads = attention(lw, x, positional, pm.dims)  # [E, B, H, S, d]
        if probe is not None:
            heads = probe.output(block, heads)
        src = append_sources(src, heads, len(graph.sources))
        resid = resid + heads.sum(2)
        if lw.bo is not None:
            resid = resid + lw.bo
        block = graph.mlp_block(layer)
        x = dest_inputs(resid, src, ablated, flat, block)
        if probe is not None:
            x = probe.inputs(block, x)
        out = lw.mlp(lw.ln_mlp(x.single()))
        if probe is not None:
            out = probe.output(block, out[:, :, None])[:, :, 0]
        src = append_sources(src, out[:, :, None], len(graph.sources))
        resid = resid + out
    return src, resid


def _unembed(
    pm: PatchModel,
    positional: Positional,
    ablated: Tensor | None,
    flat: EdgeMask | None,
    src: Tensor,
    resid: Tensor,
    all_positions: bool,
    probe: Probe | None = None,
) -> Tensor:
    end = pm.graph.end_block
    m = None if flat is None else flat.block(end)
    if not all_positions:  # only the answer position: select it before mixing
        b, s = resid.shape[1], resid.shape[2]
        rows, last = torch.arange(b, device=resid.device), positional.last
        resid = resid[:, rows, last][:, :, None]  # [E, B, 1, d]
        src = src.transpose(2, 3)[:, rows, last][:, :, :, None]  # [E, B, n, 1, d]
        if ablated is not None and m is not None:
            full = ablated.expand(b, -1, s, -1)
            ablated = full.transpose(1, 2)[rows, last][:, :, None]  # [B, n, 1, d]
    x = dest_inputs(resid, src, ablated, flat, end)
    if probe is not None:
        x = probe.inputs(end, x)
    x = x.single()  # [E, B, S | 1, d]
    if not all_positions:
        x = x[:, :, 0]
    return pm.weights.unembed(pm.weights.final_norm(x))


def _last_block_at_answer(
    pm: PatchModel,
    positional: Positional,
    ablated: Tensor,
    flat: EdgeMask | None,
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
        x = dest_inputs(resid, src, ablated, flat, graph.attn_block(layer))
        heads = attention(lw, x, positional, pm.dims, answer=True)  # [E, B, H, 1, d]
    last = positional.last
    src = gather_position(src, last, dim=3, batch_axis=1)
    resid = gather_position(resid, last, dim=2, batch_axis=1)
    b = resid.shape[1]
    ablated = gather_position(ablated.expand(b, -1, s, -1), last, dim=2, batch_axis=0)
    src = append_sources(src, heads, len(graph.sources))
    resid = resid + heads.sum(2)
    if lw.bo is not None:
        resid = resid + lw.bo
    x = dest_inputs(resid, src, ablated, flat, graph.mlp_block(layer))
    out = lw.mlp(lw.ln_mlp(x.single()))
    return append_sources(src, out[:, :, None], len(graph.sources)), resid + out, ablated


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
