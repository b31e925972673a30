"""Greedy head pruning equals the seed's loop run on the HF model with zeroing hooks."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from circuitlab.acdc import HeadPruningConfig, PatchContext, prune_heads
from circuitlab.errors import ConfigError


def _hf_metric(ctx: PatchContext, zeroed: list[tuple[int, int]], metric: str) -> float:
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


def _reference(ctx: PatchContext, threshold: float, metric: str) -> tuple[list[str], dict]:
    n_layers, n_heads = ctx.model.dims.n_layers, ctx.model.dims.n_heads
    initial = _hf_metric(ctx, [], metric)
    pruned: list[tuple[int, int]] = []
    deltas = {}
    for layer in reversed(range(n_layers)):
        for head in range(n_heads):
            value = _hf_metric(ctx, [*pruned, (layer, head)], metric)
            deltas[f"A{layer}.{head}"] = value - initial
            if abs(value - initial) < threshold:
                pruned.append((layer, head))
    return [f"A{ly}.{h}" for ly, h in pruned], deltas


@pytest.mark.parametrize("metric", ["target_logit", "logit_diff", "kl"])
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_matches_seed_loop_on_hf_model(
    arch: str, metric: str, make_ctx: Callable[..., tuple]
) -> None:
    pm, ctx = make_ctx(arch, "zero")
    n_heads = pm.dims.n_layers * pm.dims.n_heads
    for threshold in [1e-5 * 2**k for k in range(16)]:
        ref_pruned, ref_deltas = _reference(ctx, threshold, metric)
        if 0 < len(ref_pruned) < n_heads:
            break
    else:
        pytest.fail("no threshold gives a mixed result on the tiny model")
    result = prune_heads(ctx, HeadPruningConfig(threshold=threshold, metric=metric))  # type: ignore[arg-type]
    assert list(result.pruned) == ref_pruned
    assert len(result.kept) + len(result.pruned) == n_heads
    assert list(result.deltas) == list(ref_deltas)  # layer-descending visit order
    for name, delta in ref_deltas.items():
        assert result.deltas[name] == pytest.approx(delta, abs=1e-5)
    assert result.n_forward == ctx.n_forward + n_heads
    assert result.final_metric == pytest.approx(
        _hf_metric(ctx, [tuple(map(int, h[1:].split("."))) for h in ref_pruned], metric),
        abs=1e-5,
    )


def test_config_and_json(make_ctx: Callable[..., tuple]) -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="threshold"):
            HeadPruningConfig(threshold=bad)
    with pytest.raises(ConfigError, match="metric"):
        HeadPruningConfig(metric="mse")  # type: ignore[arg-type]
    _, ctx = make_ctx("LlamaForCausalLM", "zero")
    result = prune_heads(ctx, HeadPruningConfig(threshold=1e-9))
    assert result.pruned == () and result.final_metric == result.initial_metric
    data = json.loads(json.dumps(result.to_json()))
    assert data["method"] == "head_pruning" and len(data["kept"]) == 8
