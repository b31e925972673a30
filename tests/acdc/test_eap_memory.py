"""EAP from destination-input gradients equals the mask gradients it replaces (every
architecture, IG steps, micro-batches), keeps the parameters' flags, and needs less memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from acdc_support import SUPPORTED, batch_of, pair_rows, tokenizer

from circuitlab.acdc import EAPConfig, eap_scores, edge_attribution, patchable, prepare
from circuitlab.acdc.eap import _mask_gradient
from circuitlab.acdc.gradients import frozen, prompt_slices
from circuitlab.acdc.memory import eap_micro_batch, measured_saved_bytes, saved_bytes
from circuitlab.errors import ConfigError
from circuitlab.models import LoadedModel
from reference.eap import reference_mask_scores
from tiny_models import build_tiny


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
        for p in params:  # the model is shared: another test's backward may have left some
            p.grad = None
        eap_scores(ctx)
        assert params[1].requires_grad and params[1].grad is None  # no parameter gradient
    finally:
        params[0].requires_grad_(True)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_bf16_model_ranks_edges_as_float32(arch: str, tmp_path: Path) -> None:
    """On a bf16 model the gradients come through bf16 arithmetic but the differences, sums
    and scores are float32: the top 10 % of edges are those of the float32 model (at most one
    swapped) and every score is within 1 % of the largest."""
    lm = build_tiny(arch, tmp_path)
    rows = pair_rows(8)
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        lm.model.to(dtype)
        ctx = prepare(patchable(lm), batch_of(lm, rows), "resample")
        scores[dtype] = torch.stack([eap_scores(ctx, "logit_diff", s) for s in (1, 5)])
    ref, low = scores[torch.float32], scores[torch.bfloat16]
    assert low.dtype == torch.float32
    k = ref.shape[1] // 10
    for a, b in zip(ref, low, strict=True):
        top_a, top_b = (set(x.abs().topk(k).indices.tolist()) for x in (a, b))
        assert len(top_a & top_b) >= k - 1
        assert float((a - b).abs().max()) <= 0.01 * float(a.abs().max())


@pytest.mark.parametrize(
    ("arch", "dtype"),
    [
        ("LlamaForCausalLM", torch.float32),
        ("LlamaForCausalLM", torch.bfloat16),
        ("Qwen2ForCausalLM", torch.bfloat16),
        ("GPT2LMHeadModel", torch.bfloat16),
    ],
)
def test_memory_formula_matches_the_saved_tensors(
    arch: str, dtype: torch.dtype, tmp_path: Path
) -> None:
    """`saved_bytes` against the bytes autograd saves (weights and the prepared batch
    excluded): the probe path within 10 %, the mask path within 25 % and never below (two
    layers here: the per-edge differences, which grow with the layers, are a small part)."""
    lm = build_tiny(arch, tmp_path)
    lm.model.to(dtype)
    pm = patchable(lm)
    ctx = prepare(pm, batch_of(lm, pair_rows(6)), "resample")
    exclude = {p.untyped_storage().data_ptr() for p in lm.model.parameters()}
    gpt2 = arch == "GPT2LMHeadModel"
    style = {"rms_norm": not gpt2, "mlp": "gelu_new" if gpt2 else "gated"}
    b, s = ctx.batch.input_ids.shape
    for steps in (1, 3):
        probe = measured_saved_bytes(
            lambda k=steps: eap_scores(ctx, "logit_diff", k, micro_batch=b), exclude
        )
        mask = measured_saved_bytes(lambda k=steps: _mask_gradient(ctx, "logit_diff", k), exclude)
        kw = {"batch": b, "seq": s, "dtype": dtype, "ig_steps": steps, **style}
        assert saved_bytes(pm.dims, path="probe", **kw) == pytest.approx(probe, rel=0.1)
        assert mask <= saved_bytes(pm.dims, path="mask", **kw) <= 1.25 * mask
        assert probe < mask


def test_default_micro_batch_fits_the_budget(make_ctx: Callable[..., tuple]) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample", pair_rows(6))
    s = ctx.batch.input_ids.shape[1]

    def size(b: int) -> int:
        return saved_bytes(pm.dims, batch=b, seq=s, dtype=pm.dtype, path="probe", ig_steps=5)

    assert eap_micro_batch(ctx, 5, budget=size(6)) == 6
    assert eap_micro_batch(ctx, 5, budget=size(4)) == 4
    assert eap_micro_batch(ctx, 5, budget=size(4) - 1) == 3
    assert eap_micro_batch(ctx, 5, budget=0) == 1


def test_config_micro_batch_reaches_the_scores(make_ctx: Callable[..., tuple]) -> None:
    _, ctx = make_ctx("GPT2LMHeadModel", "resample", pair_rows(5))
    with pytest.raises(ConfigError, match="micro_batch"):
        EAPConfig(micro_batch=0)
    one = edge_attribution(ctx, EAPConfig(ig_steps=3, micro_batch=5))
    split = edge_attribution(ctx, EAPConfig(ig_steps=3, micro_batch=2))
    assert split.n_forward == one.n_forward  # micro-batches split the work, not add to it
    torch.testing.assert_close(torch.tensor(split.scores), torch.tensor(one.scores))
