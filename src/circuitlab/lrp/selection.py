"""From per-prompt attributions to a circuit: aggregation over prompts, then selection.

Works on the `[layers, positions, d_mlp]` grid of end-relative offsets (see `attribution`),
fully vectorised; a neuron key is `(layer, offset, neuron)` with `offset < 0`.
Seed semantics (`select_circuit`, `discover_circuit_multi`), written for tensors:

* aggregation `mean`: attributions summed over prompts / number of prompts;
* aggregation `any`: when selecting by `percentage`, each prompt first keeps only neurons with
  |a| ≥ threshold·|that prompt's metric|; then, over prompts, the value of largest magnitude;
* selection `threshold`: the smallest set of largest-|a| neurons whose cumulative |a| reaches
  `threshold` × the total; `topk`: the `top_k` largest; `percentage`: |a| ≥ threshold·|mean
  metric|; `per_layer_topk`: the `per_layer_topk` largest of every layer, then (if `top_k`) the
  global `top_k` of those.

Neurons with zero attribution are never selected; an empty selection is an error that says the
largest attribution seen, so the user can pick a threshold that keeps something.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from circuitlab.errors import ConfigError
from circuitlab.lrp.attribution import Attributions
from circuitlab.types import NeuronKey

Aggregation = Literal["mean", "any"]
AGGREGATIONS: tuple[str, ...] = ("mean", "any")
METHODS: tuple[str, ...] = ("threshold", "topk", "percentage", "per_layer_topk")


def aggregate(
    attr: Attributions, how: str = "mean", *, per_prompt_threshold: float | None = None
) -> Tensor:
    """Aggregate `[prompts, L, P, D]` scores over prompts into `[L, P, D]`."""
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")
    scores = attr.scores
    if how == "mean":
        return scores.sum(0) / scores.shape[0]
    if per_prompt_threshold is not None:
        floor = per_prompt_threshold * attr.metric.abs()
        scores = scores * (scores.abs() >= floor[:, None, None, None])
    pick = scores.abs().argmax(0, keepdim=True)
    return scores.gather(0, pick)[0]


def select(
    grid: Tensor,
    method: str,
    *,
    threshold: float = 0.005,
    top_k: int | None = None,
    per_layer_topk: int | None = None,
    reference: float | None = None,
) -> dict[NeuronKey, float]:
    """Select circuit neurons from an aggregated `[L, P, D]` grid (see the module docstring)."""
    if method not in METHODS:
        raise ConfigError(
            f"unknown selection method {method!r}; choose one of {', '.join(METHODS)}"
        )
    n_layers, n_pos, d_mlp = grid.shape
    flat = grid.flatten()
    mag = flat.abs()
    nonzero = mag > 0
    if method == "topk":
        chosen = _top(mag, _need(top_k, "top_k", method))
    elif method == "percentage":
        if reference is None:
            raise ConfigError("selection 'percentage' needs the reference metric value")
        chosen = ((mag >= threshold * abs(reference)) & nonzero).nonzero().flatten()
    elif method == "threshold":
        order = mag.argsort(descending=True)
        cum = mag[order].cumsum(0)
        total = cum[-1] if len(cum) else torch.tensor(0.0)
        n = int((cum < threshold * total).sum()) + 1 if total > 0 else 0
        chosen = order[:n]
    else:  # per_layer_topk
        k = min(_need(per_layer_topk, "per_layer_topk", method), n_pos * d_mlp)
        per_layer = mag.view(n_layers, -1).topk(k, dim=1).indices
        chosen = (per_layer + torch.arange(n_layers)[:, None] * n_pos * d_mlp).flatten()
        if top_k is not None and len(chosen) > top_k:
            chosen = chosen[mag[chosen].topk(top_k).indices]
    chosen = chosen[nonzero[chosen]]
    if len(chosen) == 0:
        largest = float(mag.max()) if len(mag) else 0.0
        raise ConfigError(
            f"selection {method!r} kept no neuron: the largest |attribution| seen is "
            f"{largest:.3g}"
            + (
                f" and the threshold was {threshold * abs(reference):.3g}"
                if method == "percentage" and reference is not None
                else ""
            )
            + "; lower the threshold or use 'topk'"
        )
    return _keys(grid, chosen)


def _need(value: int | None, name: str, method: str) -> int:
    if value is None:
        raise ConfigError(f"selection {method!r} needs {name}")
    return value


def _top(mag: Tensor, k: int) -> Tensor:
    return mag.topk(min(k, len(mag))).indices


def _keys(grid: Tensor, flat_idx: Tensor) -> dict[NeuronKey, float]:
    _, n_pos, d_mlp = grid.shape
    values = grid.flatten()[flat_idx].tolist()
    layer = (flat_idx // (n_pos * d_mlp)).tolist()
    pos = (flat_idx // d_mlp % n_pos - n_pos).tolist()
    neuron = (flat_idx % d_mlp).tolist()
    return {(ly, p, n): v for ly, p, n, v in zip(layer, pos, neuron, values, strict=True)}


def top_fraction_mask(grid: Tensor, fraction: float) -> Tensor:
    """Boolean `[L, P, D]` mask of the round(fraction × size) largest-|a| cells (≥ 1)."""
    k = max(1, round(fraction * grid.numel()))
    mask = torch.zeros(grid.numel(), dtype=torch.bool)
    mask[grid.abs().flatten().topk(k).indices] = True
    return mask.view(grid.shape)


def contrastive_difference(positive: Tensor, negative: Tensor) -> Tensor:
    """Mean last-token activation of the positive set minus the negative set, `[L, D]`.

    `positive`/`negative`: `[prompts, L, D]` (see `attribution.last_activations`).
    """
    if len(positive) == 0 or len(negative) == 0:
        raise ConfigError(
            "contrastive discovery needs prompts in both the positive and negative set"
        )
    return positive.mean(0) - negative.mean(0)


def select_contrastive(
    diff: Tensor, top_k: int, skip_layers: frozenset[int] = frozenset()
) -> dict[NeuronKey, float]:
    """Top-k neurons by |difference| (position −1: the last token), seed `discover_contrastive`."""
    diff = diff.clone()
    if skip_layers:
        diff[list(skip_layers)] = 0
    return select(diff[:, None, :], "topk", top_k=top_k)
