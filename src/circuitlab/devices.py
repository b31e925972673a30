"""Tensors of a model split across devices (`device_map: auto`): each stays on its layer's device.

A sharded model runs layer `l` on its own GPU, so the activations and gradients a hook captures
at layer `l` live there, the logits live on the last shard, and the prompt tensors on the first
(`LoadedModel.device`). Any op mixing two of them raises. The neuron stages therefore index and
reduce each tensor where it lives and move only small results; the few helpers below are the
one place that knows how. On an unsharded model every move here is a no-op (`Tensor.to` returns
the tensor itself), so results are bit-identical to code that never moved anything.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def device_of(where: Tensor | nn.Module) -> torch.device:
    """The device of a tensor, or of a module's first parameter (a layer lives on one device)."""
    if isinstance(where, Tensor):
        return where.device
    first = next(where.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def to_device_of(x: Tensor, where: Tensor | nn.Module) -> Tensor:
    """`x` on the device of `where` (a tensor or a layer); the same tensor when it is already
    there."""
    return x.to(device_of(where))


def at_last(x: Tensor, last: Tensor) -> Tensor:
    """`x[b, last[b]]` for every row `b` of `x` `[batch, seq, …]`, computed on `x`'s device
    (`last` `[batch]` may sit on another shard)."""
    rows = torch.arange(x.shape[0], device=x.device)
    return x[rows, to_device_of(last, x)]


def stack_on(tensors: Iterable[Tensor], device: torch.device | str, dim: int = 0) -> Tensor:
    """Stack per-layer tensors that may live on different devices, gathered on `device`."""
    return torch.stack([t.to(device) for t in tensors], dim)
