"""The patch layer: equal to HF unpatched, equal to the per-edge reference when patched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from acdc_support import REFUSED, SUPPORTED, batch_of, pair_rows, tokenizer
from transformers import MistralConfig, MistralForCausalLM

from circuitlab.acdc import (
    evaluate_masks,
    forward,
    get_metric,
    patchable,
    prepare,
    prepare_rows,
)
from circuitlab.errors import ConfigError, DatasetError, ModelError
from circuitlab.models import LoadedModel, load_model
from reference.acdc import reference_logits
from tiny_models import DIMS, HEADS, save_tokenizer


def _hf_logits(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("arch", SUPPORTED)
def test_unpatched_equals_hf(arch: str, tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(arch)
    pm = patchable(lm)
    ctx = prepare(pm, batch_of(lm, pair_rows(5)), "zero")
    b = ctx.batch
    assert b.attention_mask.min() == 0  # the batch really is padded
    hf = _hf_logits(lm, b.input_ids, b.attention_mask)
    real = b.attention_mask.bool()
    torch.testing.assert_close(forward(ctx, all_positions=True)[real], hf[real], atol=1e-5, rtol=0)
    at_answer = hf[torch.arange(len(b)), b.last]
    torch.testing.assert_close(forward(ctx), at_answer, atol=1e-5, rtol=0)
    torch.testing.assert_close(ctx.clean_logits, at_answer, atol=1e-5, rtol=0)
    zeros = torch.zeros(3, pm.graph.n_edges)
    torch.testing.assert_close(forward(ctx, zeros), at_answer.expand(3, -1, -1), atol=1e-5, rtol=0)


def test_sliding_window_equals_hf(tmp_path: Path) -> None:
    torch.manual_seed(0)
    MistralForCausalLM(MistralConfig(**DIMS, **HEADS, sliding_window=2)).save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    lm = load_model(tmp_path)
    pm = patchable(lm)
    assert {lw.window for lw in pm.layers} == {2}
    ctx = prepare(pm, batch_of(lm, pair_rows(4)), "zero")
    b = ctx.batch
    hf = _hf_logits(lm, b.input_ids, b.attention_mask)
    torch.testing.assert_close(forward(ctx), hf[torch.arange(4), b.last], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", REFUSED)
def test_unsupported_architectures_are_refused(
    arch: str, tiny: Callable[[str], LoadedModel]
) -> None:
    with pytest.raises(ModelError, match="norms on the attention/MLP outputs"):
        patchable(tiny(arch))


@pytest.mark.parametrize("ablation", ["resample", "mean", "zero"])
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel", "Qwen2ForCausalLM"])
def test_random_edge_sets_match_reference(
    arch: str, ablation: str, tiny: Callable[[str], LoadedModel]
) -> None:
    lm = tiny(arch)
    pm = patchable(lm)
    rows = pair_rows(4)
    ctx = prepare(pm, batch_of(lm, rows), ablation)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(3, pm.graph.n_edges, generator=g) < 0.3).float()
    masks[2] = torch.rand(pm.graph.n_edges, generator=g)  # fractional mixing too
    got = forward(ctx, masks)  # the three sets in one forward
    clean = forward(ctx)
    for e in range(3):
        seen: set[str] = set()
        ref = reference_logits(lm, pm.graph, tokenizer(lm), rows, masks[e], ablation, seen)
        assert len(seen) == pm.graph.n_edges  # the reference visits every graph edge
        torch.testing.assert_close(got[e], ref, atol=2e-5, rtol=1e-5)
        assert not torch.allclose(got[e], clean, atol=1e-3)  # patching changed something


def test_every_edge_into_resid_end_resampled_gives_corrupt_logits(
    tiny: Callable[[str], LoadedModel],
) -> None:
    lm = tiny("LlamaForCausalLM")
    pm = patchable(lm)
    ctx = prepare(pm, batch_of(lm, pair_rows(4)), "resample")
    b = ctx.batch
    end = pm.graph.end_block
    mask = torch.zeros(pm.graph.n_edges)
    mask[end.offset : end.stop] = 1.0
    corrupt = _hf_logits(lm, b.corrupt_ids, b.attention_mask)[torch.arange(4), b.last]
    torch.testing.assert_close(forward(ctx, mask), corrupt, atol=1e-5, rtol=0)
    assert not torch.allclose(ctx.clean_logits, corrupt, atol=1e-3)


def test_resume_from_a_block_equals_the_full_forward(
    make_ctx: Callable[..., tuple],
) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    graph = pm.graph
    g = torch.Generator().manual_seed(2)
    masks = (torch.rand(4, graph.n_edges, generator=g) < 0.5).float()
    late = graph.edge_block_layer >= 1
    masks[:, ~late] = 0.0
    torch.testing.assert_close(forward(ctx, masks, start_layer=1), forward(ctx, masks))
    only_end = masks * (graph.edge_block_layer == graph.n_layers)
    torch.testing.assert_close(
        forward(ctx, only_end, start_layer=graph.n_layers), forward(ctx, only_end)
    )
    with pytest.raises(ConfigError, match="cannot resume at block 1"):
        forward(ctx, torch.ones(graph.n_edges), start_layer=1)
    with pytest.raises(ConfigError, match="start_layer"):
        forward(ctx, masks, start_layer=graph.n_layers + 1)


def test_gradients_flow_to_float_masks(make_ctx: Callable[..., tuple]) -> None:
    pm, ctx = make_ctx("GPT2LMHeadModel", "resample")
    mask = torch.zeros(2, pm.graph.n_edges, requires_grad=True)
    value = evaluate_masks(ctx, mask, "logit_diff").sum()
    (grad,) = torch.autograd.grad(value, mask)
    assert grad.shape == mask.shape and bool((grad != 0).any())
    assert all(p.grad is None for p in pm.loaded.model.parameters())  # model untouched


def test_evaluate_masks_gives_one_metric_per_set(make_ctx: Callable[..., tuple]) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    masks = torch.rand(5, pm.graph.n_edges, generator=torch.Generator().manual_seed(3)) < 0.2
    values = evaluate_masks(ctx, masks.float(), "kl")
    one_by_one = torch.stack([evaluate_masks(ctx, m.float(), "kl")[0] for m in masks])
    torch.testing.assert_close(values, one_by_one, atol=1e-6, rtol=1e-5)
    assert float(evaluate_masks(ctx, torch.zeros(pm.graph.n_edges), "kl")[0]) == pytest.approx(
        0.0, abs=1e-6
    )
    custom = evaluate_masks(ctx, masks.float(), lambda logits, c: logits.mean((-2, -1)))
    assert custom.shape == (5,)
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("accuracy")


def test_mean_ablation_with_reference_rows(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny("LlamaForCausalLM")
    pm = patchable(lm)
    rows = pair_rows(4)
    own = prepare(pm, batch_of(lm, rows), "mean")
    same = prepare(pm, batch_of(lm, rows), "mean", reference=batch_of(lm, rows))
    torch.testing.assert_close(own.ablated, same.ablated)
    assert same.n_forward == own.n_forward + 1
    with pytest.raises(ConfigError, match="reference prompts"):
        prepare(pm, batch_of(lm, rows), "mean", reference=batch_of(lm, rows[:1]))


def test_bad_inputs_fail_clearly(make_ctx: Callable[..., tuple]) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "zero")
    with pytest.raises(ConfigError, match="n_edges"):
        forward(ctx, torch.zeros(pm.graph.n_edges + 1))
    with pytest.raises(ConfigError, match="ablation"):
        prepare(pm, ctx.batch, "shuffle")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="at least one row"):
        prepare_rows(pm, [], "zero")
    bad = ctx.batch
    left_padded = type(bad)(
        bad.ids,
        bad.input_ids.flip(1),
        bad.attention_mask.flip(1),
        bad.last,
        bad.target,
        bad.counterfactual,
        bad.corrupt_ids.flip(1),
    )
    with pytest.raises(DatasetError, match="right-padded"):
        prepare(pm, left_padded, "zero")


@pytest.mark.parametrize("ablation", ["resample", "mean", "zero"])
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel", "MistralForCausalLM"])
def test_answer_only_equals_the_full_last_block(
    arch: str, ablation: str, make_ctx: Callable[..., tuple]
) -> None:
    """Queries and MLP of the last block at the answer position only: same logits."""
    pm, ctx = make_ctx(arch, ablation)
    graph = pm.graph
    g = torch.Generator().manual_seed(3)
    masks = (torch.rand(3, graph.n_edges, generator=g) < 0.3).float()
    masks[0] = 0.0
    for start in (0, graph.n_layers - 1):
        m = masks * (graph.edge_block_layer >= start)
        full = forward(ctx, m, start_layer=start)
        fast = forward(ctx, m, start_layer=start, answer_only=True)
        torch.testing.assert_close(fast, full, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(forward(ctx, answer_only=True), ctx.clean_logits, atol=2e-5, rtol=0)
