"""EAP equals the gradient of the per-edge reference; finite differences; IG folding."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from acdc_support import batch_of, pair_rows, tokenizer

from circuitlab.acdc import EAPConfig, eap_scores, edge_attribution, forward, patchable, prepare
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
