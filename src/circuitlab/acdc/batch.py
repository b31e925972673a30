"""A prompt batch prepared for patching, and what both patch layers (the native one in
`circuitlab.acdc.patch`, the TransformerLens hooks in `circuitlab.acdc.hooked`) share about
it: the right-padding check, the per-batch position constants, the ablated source outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from circuitlab.acdc.graph import Graph
from circuitlab.acdc.weights import PatchModel
from circuitlab.errors import ConfigError, DatasetError
from circuitlab.prompts import PromptBatch, encode_rows
from circuitlab.types import Ablation, TaskRow


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


def make_positional(
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
