"""A model split over virtual devices, on one CPU: what makes a cross-device op raise here.

torch has one CPU device, so `device_map` cannot split a model in a test. `VirtualShards`
stands in: a `TorchFunctionMode` that tags each tensor the stage code sees with a shard number
and raises, as CUDA does across GPUs, when one op mixes tensors of two shards. Layer `l`'s
neuron activations (captured or edited through the adapter) and their gradients live on shard
`shard_of(l)`, the logits on the last layer's shard, and everything the stage makes itself
(prompts, masks, `lm.device`) on shard 0, the first device, as `LoadedModel.device` is for a
split model. `x.device` reports `cpu:<shard>`, and `.to` and factory functions given a
`device=` put a tensor on that shard, so code that moves tensors where they belong passes and
code that mixes them raises.

What this proves, and what not: the neuron stages' own tensor code (indexing, stacking,
masks, reductions, hook edits) never mixes layers' devices; the model's internals run
unchecked (accelerate moves their inputs in a real split), 0-dim tensors mix freely (as CPU
scalars do with CUDA tensors), and the host is not told apart from the first device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from circuitlab.models.adapters.base import Adapter
from circuitlab.models.loading import LoadedModel

FACTORY_DEVICE = "device"
_DEVICE = Tensor.device.__get__  # type: ignore[attr-defined]


def shard(t: Tensor) -> int:
    return int(getattr(t, "_shard", 0))


def tag(t: Any, where: int) -> Any:
    if isinstance(t, Tensor):
        t._shard = where  # type: ignore[attr-defined]
    return t


def _target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The shard a `.to(...)` call moves to, or None when it only changes the dtype."""
    for a in (*args[1:], kwargs.get("device"), kwargs.get("other")):
        if isinstance(a, Tensor):
            return shard(a)
        if isinstance(a, str | torch.device):
            return torch.device(a).index or 0
    return None


class VirtualShards(TorchFunctionMode):
    """Raises on an op that mixes shards, while `checking` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.checking = True
        self.mixed: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if not self.checking:
            return func(*args, **kwargs)
        if func == _DEVICE:
            return torch.device("cpu", shard(args[0]))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)]
        if func in (Tensor.to, Tensor.cuda):
            where = _target(args, kwargs)
            out = func(*args, **kwargs)
            return tag(
                out.clone() if out is args[0] and where != shard(out) else out,
                shard(args[0]) if where is None else where,
            )
        if func is Tensor.cpu:
            return tag(func(*args, **kwargs).clone(), 0)
        if kwargs.get(FACTORY_DEVICE) is not None:
            where = torch.device(kwargs[FACTORY_DEVICE]).index or 0
        else:
            seen = {shard(t) for t in tensors if t.dim() > 0}
            if len(seen) > 1:
                self.mixed.append(getattr(func, "__name__", str(func)))
                raise RuntimeError(
                    f"Expected all tensors to be on the same device, but found shards "
                    f"{sorted(seen)} in {getattr(func, '__name__', func)}"
                )
            where = seen.pop() if seen else 0
        out = func(*args, **kwargs)
        return tree_map(lambda t: tag(t, where) if isinstance(t, Tensor) else t, out)

    @contextmanager
    def unchecked(self) -> Iterator[None]:
        before, self.checking = self.checking, False
        try:
            yield
        finally:
            self.checking = before


@contextmanager
def split_over_shards(
    lm: LoadedModel, monkeypatch: pytest.MonkeyPatch, shard_of: Callable[[int], int]
) -> Iterator[VirtualShards]:
    """Run `lm` as if layer `l` lived on shard `shard_of(l)` (see the module docstring)."""
    mode = VirtualShards()
    last = shard_of(lm.dims.n_layers - 1)
    model = lm.model

    def enter(*_: Any) -> None:
        mode.checking = False

    def leave(_mod: Any, _args: Any, out: Any) -> Any:
        mode.checking = True
        if getattr(out, "logits", None) is not None:
            tag(out.logits, last)
        return out

    capture, edit = Adapter.capture_neurons, Adapter.edit_neurons

    @contextmanager
    def capture_on_shards(
        self: Adapter, *args: Any, **kwargs: Any
    ) -> Iterator[Mapping[int, Tensor]]:
        with capture(self, *args, **kwargs) as captured:
            yield _OnShards(captured, shard_of)

    def edit_on_shards(self: Adapter, model: Any, fn: Any, layers: Any = None) -> Any:
        def checked(layer: int, x: Tensor) -> Tensor:
            mode.checking = True
            try:
                out = fn(layer, tag(x, shard_of(layer)))
                if shard(out) != shard_of(layer):
                    raise RuntimeError(f"the edit of layer {layer} left its device")
                return out
            finally:
                mode.checking = False

        return edit(self, model, checked, layers)

    grad = torch.autograd.grad

    def grad_on_shards(outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        with mode.unchecked():
            got = grad(outputs, inputs, *args, **kwargs)
        return tuple(tag(g, shard(i)) for g, i in zip(got, inputs, strict=True))

    monkeypatch.setattr(Adapter, "capture_neurons", capture_on_shards)
    monkeypatch.setattr(Adapter, "edit_neurons", edit_on_shards)
    monkeypatch.setattr(torch.autograd, "grad", grad_on_shards)
    hooks = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]
    try:
        with mode:
            yield mode
    finally:
        for h in hooks:
            h.remove()


class _OnShards(Mapping[int, Tensor]):
    """The captured activations, each tagged with its layer's shard when the stage reads it."""

    def __init__(self, captured: dict[int, Tensor], shard_of: Callable[[int], int]) -> None:
        self._captured, self._shard_of = captured, shard_of

    def __getitem__(self, layer: int) -> Tensor:
        return tag(self._captured[layer], self._shard_of(layer))

    def __iter__(self) -> Iterator[int]:
        return iter(self._captured)

    def __len__(self) -> int:
        return len(self._captured)
