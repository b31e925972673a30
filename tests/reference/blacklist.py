"""Universal-neuron detection, literally: one prompt at a time (no padding), the down
projection's input hooked on the HF model, each layer's top-k |activation| at the last token."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from circuitlab.models import LoadedModel

# The down-projection of layer l by HF's own module names (not the adapter's).
DOWN: dict[str, Callable[[nn.Module, int], nn.Module]] = {
    "LlamaForCausalLM": lambda m, layer: m.model.layers[layer].mlp.down_proj,
    "GPT2LMHeadModel": lambda m, layer: m.transformer.h[layer].mlp.c_proj,
}


def reference_top(lm: LoadedModel, prompts: list[str], top_k: int) -> list[set[tuple[int, int]]]:
    """Per prompt, one forward pass alone (no padding): the set of (layer, neuron) in each
    layer's top-k |activation| at the last token, hooked on HF's down-projection modules."""
    arch = type(lm.model).__name__
    out = []
    for prompt in prompts:
        acts: dict[int, torch.Tensor] = {}

        def keep(layer: int, store: dict[int, torch.Tensor] = acts) -> Callable[..., None]:
            def hook(_mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                store[layer] = args[0][0, -1].detach()

            return hook

        handles = [
            DOWN[arch](lm.model, layer).register_forward_pre_hook(keep(layer))
            for layer in range(lm.model.config.num_hidden_layers)
        ]
        try:
            with torch.no_grad():
                lm.model(**lm.tokenizer(prompt, return_tensors="pt"))
        finally:
            for h in handles:
                h.remove()
        top = set()
        for layer, act in acts.items():
            top |= {(layer, int(i)) for i in act.abs().topk(top_k).indices}
        out.append(top)
    return out


def reference_counts(tops: list[set[tuple[int, int]]]) -> Counter[tuple[int, int]]:
    return Counter(pair for top in tops for pair in top)
