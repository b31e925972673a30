"""Greedy head pruning equals the seed's loop run on the HF model with zeroing hooks."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from circuitlab.acdc import HeadPruningConfig, prune_heads
from circuitlab.errors import ConfigError
from reference.heads import hooked_metric, reference_head_pruning


@pytest.mark.parametrize("metric", ["target_logit", "logit_diff", "kl"])
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_matches_seed_loop_on_hf_model(
    arch: str, metric: str, make_ctx: Callable[..., tuple]
) -> None:
    pm, ctx = make_ctx(arch, "zero")
    n_heads = pm.dims.n_layers * pm.dims.n_heads
    for threshold in [1e-5 * 2**k for k in range(16)]:
        ref_pruned, ref_deltas = reference_head_pruning(ctx, threshold, metric)
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
        hooked_metric(ctx, [tuple(map(int, h[1:].split("."))) for h in ref_pruned], metric),
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
