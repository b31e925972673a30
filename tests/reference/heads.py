"""Seed 000's greedy head pruning, literally: each head's slice of the output-projection input
zeroed by a PyTorch hook on the HF model (its `hook_result`), heads visited from the last layer,
a head pruned when the metric moves less than the threshold."""

from __future__ import annotations

import torch

from circuitlab.acdc import PatchContext


def hooked_metric(ctx: PatchContext, zeroed: list[tuple[int, int]], metric: str) -> float:
    """The seed's `_eval_with_pruning`: each pruned head's slice of the output-projection
    input set to zero (its `hook_result`), read at each prompt's answer position."""
    lm, b = ctx.model.loaded, ctx.batch
    hd = lm.dims.head_dim
    handles = []
    for layer in {ly for ly, _ in zeroed}:
        heads = [h for ly, h in zeroed if ly == layer]

        def hook(_mod, args, heads=heads):  # type: ignore[no-untyped-def]
            z = args[0].clone()
            for h in heads:
                z[..., h * hd : (h + 1) * hd] = 0.0
            return (z, *args[1:])

        o_proj = lm.adapter.module(lm.model, layer, "o")
        handles.append(o_proj.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    finally:
        for h in handles:
            h.remove()
    out = logits[torch.arange(len(b)), b.last]
    if metric == "target_logit":
        return float(out.gather(1, b.target[:, None]).mean())
    if metric == "logit_diff":
        diff = out.gather(1, b.target[:, None]) - out.gather(1, b.counterfactual[:, None])
        return float(diff.mean())
    clean = torch.log_softmax(ctx.clean_logits, -1)
    return float((clean.exp() * (clean - torch.log_softmax(out, -1))).sum(-1).mean())


def reference_head_pruning(
    ctx: PatchContext, threshold: float, metric: str
) -> tuple[list[str], dict]:
    n_layers, n_heads = ctx.model.dims.n_layers, ctx.model.dims.n_heads
    initial = hooked_metric(ctx, [], metric)
    pruned: list[tuple[int, int]] = []
    deltas = {}
    for layer in reversed(range(n_layers)):
        for head in range(n_heads):
            value = hooked_metric(ctx, [*pruned, (layer, head)], metric)
            deltas[f"A{layer}.{head}"] = value - initial
            if abs(value - initial) < threshold:
                pruned.append((layer, head))
    return [f"A{ly}.{h}" for ly, h in pruned], deltas
