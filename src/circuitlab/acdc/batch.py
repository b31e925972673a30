"""A prompt batch prepared for patching, and what both patch layers (the native one in
`circuitlab.acdc.patch`, the TransformerLens hooks in `circuitlab.acdc.hooked`) share about
it: the right-padding check, the per-batch position constants, the ablated source outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self

import torch
from torch import Tensor

from circuitlab.acdc.graph import Block, Graph
from circuitlab.errors import ConfigError, DatasetError, ModelError
from circuitlab.prompts import PromptBatch, encode_rows
from circuitlab.types import Ablation, TaskRow

if TYPE_CHECKING:
    from circuitlab.acdc.backend import PatchBackend
    from circuitlab.acdc.patch import PatchModel
    from circuitlab.acdc.weights import ModelWeights
    from circuitlab.models.loading import LoadedModel


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


@dataclass(frozen=True, eq=False, kw_only=True)
class PreparedBatch:
    """What every backend's `prepare` returns (`circuitlab.acdc.backend`): the batch, its
    ablated source outputs ``[B | 1, n_sources, S | 1, d]`` (broadcast over prompts for mean,
    and positions for zero), the clean answer logits ``[B, vocab]``, and what preparing cost
    (``n_forward`` full forward passes, ``seconds`` of wall time)."""

    model: PatchBackend
    batch: PromptBatch
    ablation: Ablation
    ablated: Tensor = field(repr=False)
    clean_logits: Tensor = field(repr=False)
    n_forward: int = 0
    seconds: float = 0.0

    @property
    def graph(self) -> Graph:
        return self.model.graph

    def prompts(self, rows: slice) -> Self:
        """The same prepared batch cut to the prompts ``rows`` (views, nothing recomputed):
        evaluating it gives those prompts' results (`circuitlab.acdc.evaluate.run_masks`
        evaluates many edge sets a few prompts at a time)."""
        return replace(self, **self._per_prompt(rows))

    def _per_prompt(self, rows: slice) -> dict[str, Any]:
        b = self.batch
        batch = PromptBatch(
            b.ids[rows],
            *(t[rows] for t in (b.input_ids, b.attention_mask, b.last, b.target)),
            *(t[rows] for t in (b.counterfactual, b.corrupt_ids)),
            b.has_corrupt,
            b.has_answers,
        )
        ablated = self.ablated if self.ablated.shape[0] == 1 else self.ablated[rows]
        return {"batch": batch, "ablated": ablated, "clean_logits": self.clean_logits[rows]}


@dataclass(frozen=True, eq=False, kw_only=True)
class PatchContext(PreparedBatch):
    """A batch prepared for the native patch layer: also the clean run's cache.

    ``clean_src`` ``[B, n_sources, S, d]`` holds every source's clean output and
    ``clean_resid`` ``[n_layers + 1, B, S, d]`` the clean residual stream at the start of each
    block (index ``n_layers``: the input of ``Resid End``).
    """

    model: PatchModel
    positional: Positional = field(repr=False)
    clean_src: Tensor = field(repr=False)
    clean_resid: Tensor = field(repr=False)

    def _per_prompt(self, rows: slice) -> dict[str, Any]:
        pos = self.positional
        positional = Positional(
            attn_bias={w: bias[rows] for w, bias in pos.attn_bias.items()},
            cos=None if pos.cos is None else pos.cos[rows],
            sin=None if pos.sin is None else pos.sin[rows],
            last=pos.last[rows],
        )
        return {
            **super()._per_prompt(rows),
            "positional": positional,
            "clean_src": self.clean_src[rows],
            "clean_resid": self.clean_resid[:, rows],
        }


def require_one_device(loaded: LoadedModel, what: str) -> None:
    """ModelError unless every parameter of the model is on one device: the patch layers
    keep every source's output of a forward side by side, which a model sharded over devices
    (``device_map``) cannot give. ``what`` names the refused stage."""
    devices = {p.device for p in loaded.model.parameters()}
    if len(devices) > 1:
        raise ModelError(
            f"{what} needs the model on a single device, but it is sharded over "
            f"{len(devices)} ({', '.join(sorted(map(str, devices)))}) by `device_map`: load "
            "it on one device (drop `device_map` from the model entry and set `device`)"
        )


@dataclass(frozen=True, eq=False)
class EdgeMask:
    """A checked edge mask, ``values`` ``[E, n_edges]`` on the model's device, and what the
    forward needs to know about it, read on the host: whether a block group has a patched edge
    (`block`, `patches_in`) and each block's majority split (`split`).
    Masks are built on the host, so this costs no device round trip per block (a mask given
    on an accelerator is copied to the host once per forward).

    ``values`` are float32 on a bf16/fp16 model (the model's dtype otherwise): the mix with
    the model's activations happens in the block (`mix_operands`)."""

    values: Tensor
    host: Tensor = field(repr=False)  # the same values, detached, on the CPU

    @property
    def requires_grad(self) -> bool:
        return self.values.requires_grad

    @property
    def n_sets(self) -> int:
        return int(self.values.shape[0])

    def block(self, block: Block) -> Tensor | None:
        """The block's ``[E, n_dests, n_sources]`` mask, or None when nothing in it is
        patched (and no gradient is wanted)."""
        if not self.requires_grad and not self.patches_in(block.offset, block.stop):
            return None
        m = self.values[:, block.offset : block.stop]
        return m.reshape(m.shape[0], block.n_dests, block.n_sources)

    def patches_in(self, start: int, stop: int) -> bool:
        """Whether an edge stored in ``start:stop`` is patched (read on the host)."""
        return bool(self.host[:, start:stop].any())

    def split(self, block: Block) -> BlockSplit:
        """The block's mask around its per-source majority (`BlockSplit`), from the host copy."""
        m = self.host[:, block.offset : block.stop]
        m = m.reshape(m.shape[0], block.n_dests, block.n_sources)
        c = (m.sum((0, 1)) * 2 > m.shape[0] * m.shape[1]).to(m.dtype)  # majority (ties: 0)
        r = m - c
        differs = (r != 0).any(0)  # [n_dests, n_sources]
        rows = differs.any(1).nonzero().flatten().tolist()
        cols = differs.any(0).nonzero().flatten()
        return BlockSplit(c if bool(c.any()) else None, r, rows, cols)


@dataclass(frozen=True, eq=False)
class BlockSplit:
    """A block's mask ``m`` ``[E, n_dests, n_sources]`` as ``c + r``, on the host: ``majority``
    ``c`` ``[n_sources]`` is each source's most common value over the destinations (0 or 1;
    None when all 0) and the ``residual`` ``r = m − c`` is non-zero only on the destinations
    ``rows`` (a list) and sources ``cols``, all on the host, so the forward needs no device
    round trip to know them."""

    majority: Tensor | None
    residual: Tensor = field(repr=False)
    rows: list[int]
    cols: Tensor  # [k] source indices, on the host

    @property
    def all_cols(self) -> bool:
        return len(self.cols) == self.residual.shape[-1]


def check_mask(
    mask: Tensor | None, graph: Graph, device: torch.device, dtype: torch.dtype
) -> EdgeMask | None:
    """``mask`` (``[n_edges]`` or ``[E, n_edges]``) checked and put on ``device`` as an
    `EdgeMask`, in the model's ``dtype`` but at least float32 (a bf16 model's mask stays
    float32); ConfigError for another shape."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dim() not in (1, 2) or mask.shape[-1] != graph.n_edges:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ConfigError(
            f"an edge mask must be a tensor of shape [n_edges] or [E, n_edges] with "
            f"n_edges = {graph.n_edges}; got {got}"
        )
    flat = mask if mask.dim() == 2 else mask[None]
    dtype = torch.promote_types(dtype, torch.float32)
    values = flat.to(device=device, dtype=dtype)
    host = flat.detach().to(device="cpu", dtype=dtype)
    return EdgeMask(values=values, host=host)


def mix_operands(m: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """A mask and the activations it mixes, in the dtype their product is computed in: the
    activations' (the model's) when the mask wants no gradient (0/1 masks are exact there),
    else the mask's (float32), so edge gradients accumulate in float32 and do not tie at a
    bf16 model's resolution. Cast the product back with ``.to(x.dtype)``."""
    if m.dtype == x.dtype:
        return m, x
    if m.requires_grad:
        return m, x.to(m.dtype)
    return m.to(x.dtype), x


def make_positional(
    pm: ModelWeights, input_ids: Tensor, attention_mask: Tensor, last: Tensor
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
