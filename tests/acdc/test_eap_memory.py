"""EAP from destination-input gradients equals the mask gradients it replaces (every
architecture, IG steps, micro-batches), keeps the parameters' flags, and needs less memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from acdc_support import SUPPORTED, batch_of, pair_rows, tokenizer

from circuitlab.acdc import eap_scores, patchable, prepare
from circuitlab.acdc.eap import _mask_gradient
from circuitlab.acdc.gradients import frozen, prompt_slices
from circuitlab.errors import ConfigError
from circuitlab.models import LoadedModel
from reference.eap import reference_mask_scores


@pytest.mark.parametrize(
    ("arch", "ablation", "metric", "steps"),
    [
        ("LlamaForCausalLM", "resample", "logit_diff", 1),
        ("GPT2LMHeadModel", "resample", "logit_diff", 3),
        ("Qwen2ForCausalLM", "mean", "kl", 3),
    ],
)
def test_probe_scores_equal_the_reference_mask_gradients(
    arch: str, ablation: str, metric: str, steps: int, tiny: Callable[[str], LoadedModel]
) -> None:
    """The slow per-edge reference, differentiated w.r.t. each mask value (EAP and EAP-IG
    masks, two prompts per micro-batch): ⟨ablated − current source, ∂metric/∂dest_in⟩ is the
    mask gradient at every mask value, not only at 0."""
    lm = tiny(arch)
    pm = patchable(lm)
    rows = pair_rows(5)
    ctx = prepare(pm, batch_of(lm, rows), ablation)
    ours = eap_scores(ctx, metric, steps, micro_batch=2)
    ref = reference_mask_scores(lm, pm.graph, tokenizer(lm), rows, ctx, ablation, metric, steps)
    scale = float(ref.abs().max())
    torch.testing.assert_close(ours, ref, atol=1e-5 * scale, rtol=1e-4)
    assert int((ref.abs() > 1e-2 * scale).sum()) >= 10  # not a trivial all-zero agreement


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("steps", [1, 5])
def test_probe_scores_equal_the_mask_gradient_path(
    arch: str, steps: int, make_ctx: Callable[..., tuple]
) -> None:
    """Against the mask-gradient path the TransformerLens backend still takes, on the native
    layer, for every architecture (GQA included), in one pass and in micro-batches."""
    _, ctx = make_ctx(arch, "resample", pair_rows(6))
    ref = _mask_gradient(ctx, "logit_diff", steps)
    for micro in (6, 4, 1):
        ours = eap_scores(ctx, "logit_diff", steps, micro_batch=micro)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-4)


def test_micro_batches_weight_each_slice_by_its_prompts(make_ctx: Callable[..., tuple]) -> None:
    """Slices of unequal size (3 + 2 of 5 prompts): each slice's batch-mean scores weighted by
    its share — a plain average of the slices would differ."""
    _, ctx = make_ctx("LlamaForCausalLM", "resample", pair_rows(5))
    whole = eap_scores(ctx, micro_batch=5)
    parts = [eap_scores(p, micro_batch=5) for p in prompt_slices(ctx, 3)]
    assert [len(p.batch) for p in prompt_slices(ctx, 3)] == [3, 2]
    torch.testing.assert_close(eap_scores(ctx, micro_batch=3), (3 * parts[0] + 2 * parts[1]) / 5)
    torch.testing.assert_close(eap_scores(ctx, micro_batch=3), whole, atol=1e-6, rtol=1e-5)
    assert not torch.allclose((parts[0] + parts[1]) / 2, whole, atol=1e-4)
    with pytest.raises(ConfigError, match="micro_batch"):
        eap_scores(ctx, micro_batch=0)


def test_parameters_are_frozen_only_inside_and_restored(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny("LlamaForCausalLM")
    pm = patchable(lm)
    params = list(lm.model.parameters())
    params[0].requires_grad_(False)  # a mixed state comes back as it was
    try:
        with frozen(pm) as inner:
            assert not any(p.requires_grad for p in params)
            assert not any(t.requires_grad for lw in inner.layers for t in (lw.wq, lw.wo))
            assert pm.layers[0].wq.requires_grad  # the caller's model is untouched
        assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
        with pytest.raises(RuntimeError, match="boom"), frozen(pm):
            raise RuntimeError("boom")
        assert params[1].requires_grad
        ctx = prepare(pm, batch_of(lm, pair_rows(3)), "resample")
        eap_scores(ctx)
        assert params[1].requires_grad and params[1].grad is None  # no parameter gradient
    finally:
        params[0].requires_grad_(True)
