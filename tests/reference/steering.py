"""Slow, obviously-correct references written against Hugging Face module names (not the
adapter's), one unpadded prompt at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from circuitlab.models import LoadedModel

PROMPTS = ["w3 w7 w11 w5", "w4", "w9 w9 w20", "w30 w31 w32 w33 w34 w35"]


def hf_layers(lm: LoadedModel) -> nn.ModuleList:
    m = lm.model
    return m.transformer.h if hasattr(m, "transformer") else m.model.layers


def hf_down(layer: nn.Module) -> nn.Module:
    return layer.mlp.c_proj if hasattr(layer.mlp, "c_proj") else layer.mlp.down_proj


def hf_down_weight(layer: nn.Module) -> Tensor:  # [d_model, d_mlp]
    mod = hf_down(layer)
    return mod.weight.T if hasattr(layer.mlp, "c_proj") else mod.weight


def ids_of(lm: LoadedModel, prompt: str) -> Tensor:
    return torch.tensor([lm.tokenizer(prompt)["input_ids"]])


@contextmanager
def zero_neurons(lm: LoadedModel, pairs: list[tuple[int, int]]) -> Iterator[None]:
    """Hand-zero (layer, neuron) at every position with a plain pre-hook on HF's down proj."""
    handles = []
    for layer, mod in enumerate(hf_layers(lm)):
        idx = [n for ly, n in pairs if ly == layer]
        if not idx:
            continue

        def hook(_m: nn.Module, args: tuple[Any, ...], idx: list[int] = idx) -> tuple[Any, ...]:
            x = args[0].clone()
            for n in idx:
                x[:, :, n] = 0.0
            return (x,)

        handles.append(hf_down(mod).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def last_acts(lm: LoadedModel, prompt: str, site: str) -> Tensor:
    """[n_layers, width] activations at the prompt's last token, one prompt, no padding."""
    got: dict[int, Tensor] = {}
    handles = []
    for layer, mod in enumerate(hf_layers(lm)):
        if site == "resid":

            def fwd(_m: nn.Module, _a: Any, out: Any, layer: int = layer) -> None:
                got[layer] = (out[0] if isinstance(out, tuple) else out)[0, -1].clone()

            handles.append(mod.register_forward_hook(fwd))
        elif site == "mlp_out":

            def mlp(_m: nn.Module, _a: Any, out: Tensor, layer: int = layer) -> None:
                got[layer] = out[0, -1].clone()

            handles.append(mod.mlp.register_forward_hook(mlp))
        else:

            def pre(_m: nn.Module, args: tuple[Tensor, ...], layer: int = layer) -> None:
                got[layer] = args[0][0, -1].clone()

            handles.append(hf_down(mod).register_forward_pre_hook(pre))
    try:
        lm.model(ids_of(lm, prompt))
    finally:
        for h in handles:
            h.remove()
    return torch.stack([got[ly].float() for ly in range(len(got))])


def mean_difference(lm: LoadedModel, pos: list[str], neg: list[str], site: str) -> Tensor:
    p = torch.stack([last_acts(lm, x, site) for x in pos]).mean(0)
    n = torch.stack([last_acts(lm, x, site) for x in neg]).mean(0)
    return p - n
