"""EAP equals the gradient of the per-edge reference; finite differences; IG folding."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from acdc_support import SUPPORTED, batch_of, pair_rows, tokenizer

from circuitlab.acdc import EAPConfig, eap_scores, edge_attribution, forward, patchable, prepare
from circuitlab.acdc.eap import ig_activation_scores, ig_input_scores
from circuitlab.acdc.gradients import dest_gradients, edge_scores
from circuitlab.errors import ConfigError
from circuitlab.models import LoadedModel
from reference.acdc import reference_logits
from tiny_models import build_tiny


def _logit_diff(logits: torch.Tensor, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    t = logits.gather(-1, batch.target[:, None]) - logits.gather(-1, batch.counterfactual[:, None])
    return t.mean()


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_eap_equals_autograd_of_the_reference(
    arch: str, tiny: Callable[[str], LoadedModel]
) -> None:
    lm = tiny(arch)
    pm = patchable(lm)
    rows = pair_rows(4)
    ctx = prepare(pm, batch_of(lm, rows), "resample")
    scores = eap_scores(ctx, "logit_diff")
    mask = torch.zeros(pm.graph.n_edges, requires_grad=True)
    ref = reference_logits(lm, pm.graph, tokenizer(lm), rows, mask, "resample")
    (grad,) = torch.autograd.grad(_logit_diff(ref, ctx.batch), mask)
    torch.testing.assert_close(scores, grad, atol=1e-5, rtol=1e-4)
    assert int((scores.abs() > 1e-3).sum()) >= 10  # not a trivial all-zero agreement


def test_eap_equals_finite_differences_in_float64(tmp_path: Path) -> None:
    lm = build_tiny("GPT2LMHeadModel", tmp_path)  # LayerNorm: float64 throughout (RMSNorm
    lm.model.double()  # computes in float32); our own instance
    pm = patchable(lm)
    rows = pair_rows(3)
    ctx = prepare(pm, batch_of(lm, rows), "resample")
    scores = eap_scores(ctx, "logit_diff")
    g = torch.Generator().manual_seed(0)
    eps = 1e-5
    for i in torch.randperm(pm.graph.n_edges, generator=g)[:6].tolist():
        values = []
        for sign in (1.0, -1.0):
            mask = torch.zeros(pm.graph.n_edges, dtype=torch.float64)
            mask[i] = sign * eps
            with torch.no_grad():
                ref = reference_logits(lm, pm.graph, tokenizer(lm), rows, mask, "resample")
            values.append(float(_logit_diff(ref, ctx.batch)))
        fd = (values[0] - values[1]) / (2 * eps)
        assert float(scores[i]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_integrated_gradients_fold_the_steps(make_ctx: Callable[..., tuple]) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    folded = eap_scores(ctx, "kl", ig_steps=3)
    grads = []
    for alpha in (0.0, 1 / 3, 2 / 3):
        mask = torch.full((pm.graph.n_edges,), alpha, requires_grad=True)
        logits = forward(ctx, mask)
        clean = torch.log_softmax(ctx.clean_logits, -1)
        kl = (clean.exp() * (clean - torch.log_softmax(logits, -1))).sum(-1).mean()
        grads.append(torch.autograd.grad(kl, mask)[0])
    torch.testing.assert_close(folded, torch.stack(grads).mean(0), atol=1e-6, rtol=1e-4)
    assert bool((folded != 0).any())


def test_config_result_and_json(make_ctx: Callable[..., tuple]) -> None:
    with pytest.raises(ConfigError, match="ig_steps"):
        EAPConfig(metric="kl")
    with pytest.raises(ConfigError, match="ig_steps"):
        EAPConfig(ig_steps=0)
    with pytest.raises(ConfigError, match="metric"):
        EAPConfig(metric="accuracy")  # type: ignore[arg-type]
    pm, ctx = make_ctx("GPT2LMHeadModel", "mean")
    result = edge_attribution(ctx, EAPConfig())
    assert result.n_forward == ctx.n_forward + 1 and result.n_backward == 1
    ranking = result.ranking()
    assert sorted(ranking) == sorted(pm.graph.edges)
    by_name = result.scores_by_name()
    assert abs(by_name[ranking[0]]) == max(abs(s) for s in result.scores)
    data = json.loads(json.dumps(result.to_json()))
    assert data["method"] == "eap" and data["ablation"] == "mean"
    assert data["clean_metric"] == pytest.approx(float(_logit_diff(ctx.clean_logits, ctx.batch)))


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("ablation", ["resample", "mean", "zero"])
def test_destination_gradients_give_the_mask_gradient_scores(
    arch: str, ablation: str, make_ctx: Callable[..., tuple]
) -> None:
    """⟨ablated − clean source, ∂metric/∂destination input⟩ (the gradient probe, no per-edge
    tensors) is the mask gradient, for every architecture and ablation."""
    _, ctx = make_ctx(arch, ablation)
    _, grads = dest_gradients(ctx)
    probe = edge_scores(ctx, grads, ctx.clean_src)
    torch.testing.assert_close(probe, eap_scores(ctx), atol=1e-6, rtol=1e-4)


def test_ig_inputs_average_the_fixed_products_along_the_embedding_path(
    make_ctx: Callable[..., tuple],
) -> None:
    """EAP-IG-inputs against mask gradients: at each point of the path, a context whose clean
    run starts from that embedding and whose ablated sources are its own plus the fixed
    ablated − clean difference has mask gradients ⟨fixed δ, ∂metric/∂dest⟩."""
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    steps = 3
    ours = ig_input_scores(ctx, "logit_diff", steps)
    delta = ctx.ablated - ctx.clean_src
    clean, ablated = ctx.clean_src[:, 0], ctx.ablated[:, 0].expand_as(ctx.clean_src[:, 0])
    ref = []
    for k in range(steps):
        embed = ablated + (k / steps) * (clean - ablated)
        src, resid, logits = _record_from(pm, ctx, embed)
        point = replace(ctx, clean_src=src, clean_resid=resid, clean_logits=logits,
                        ablated=src + delta)  # fmt: skip
        ref.append(eap_scores(point, "logit_diff"))
    torch.testing.assert_close(ours, torch.stack(ref).mean(0), atol=1e-6, rtol=1e-4)
    assert not torch.allclose(ours, eap_scores(ctx), rtol=1e-2)  # a different estimator


def test_ig_activations_with_the_clean_endpoint_only(make_ctx: Callable[..., tuple]) -> None:
    """With one step each run fixes one source block at its clean value (α = 1), so every run
    computes the clean forward, but no gradient flows through the fixed block. ``Resid End``
    reads the final residual, whose gradient no fixed block changes: its edges score as EAP's.
    The last MLP's input has EAP's gradient in every run but its own (there its output is a
    constant): EAP's × (n_runs − 1)/n_runs. (MIB's code is the reference for the rest:
    tests/acdc/test_mib.py.)"""
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    ours = ig_activation_scores(ctx, "logit_diff", 1)
    eap = eap_scores(ctx)
    graph = pm.graph
    n_runs = 2 * graph.n_layers + 1
    end, mlp = graph.end_block, graph.mlp_block(graph.n_layers - 1)
    torch.testing.assert_close(ours[end.offset : end.stop], eap[end.offset : end.stop])
    torch.testing.assert_close(
        ours[mlp.offset : mlp.stop], eap[mlp.offset : mlp.stop] * (n_runs - 1) / n_runs
    )
    assert not torch.allclose(ours, eap, rtol=1e-3)  # earlier blocks lose gradient paths


def test_query_head_graph_is_the_same_function_with_k_v_edges_per_query_head(
    tiny: Callable[[str], LoadedModel],
) -> None:
    lm = tiny("LlamaForCausalLM")  # 4 query heads, 2 KV heads
    kv, per_query = patchable(lm), patchable(lm, kv_edges="query_head")
    assert per_query.graph.n_edges > kv.graph.n_edges
    rows = pair_rows(4)
    a, b = (prepare(pm, batch_of(lm, rows), "resample") for pm in (kv, per_query))
    torch.testing.assert_close(a.clean_logits, b.clean_logits, atol=0, rtol=0)
    one = torch.zeros(kv.graph.n_edges)
    one[kv.graph.edges.index("Resid Start->A1.0.K")] = 1  # KV head 0 feeds query heads 0, 1
    copies = torch.zeros(per_query.graph.n_edges)
    for h in (0, 1):
        copies[per_query.graph.edges.index(f"Resid Start->A1.{h}.K")] = 1
    torch.testing.assert_close(forward(a, one), forward(b, copies), atol=1e-6, rtol=1e-5)
    half = torch.zeros(per_query.graph.n_edges)
    half[per_query.graph.edges.index("Resid Start->A1.0.K")] = 1  # only query head 0's copy
    assert not torch.allclose(forward(b, half), forward(a, one), atol=1e-6)
    with pytest.raises(ConfigError, match="kv_edges"):
        patchable(lm, kv_edges="per_head")


def _record_from(pm, ctx, embed):  # type: ignore[no-untyped-def]
    """Sources, residuals and answer logits of an unpatched run from the given embedding."""
    from circuitlab.acdc.patch import _blocks, _unembed

    src, resid = embed[None, :, None], embed[None]
    resids = [resid]
    for layer in range(pm.graph.n_layers):
        src, resid = _blocks(pm, ctx.positional, None, None, src, resid, layer, stop=layer + 1)
        resids.append(resid)
    logits = _unembed(pm, ctx.positional, None, None, src, resid, False)
    return src[0], torch.cat(resids), logits[0]
