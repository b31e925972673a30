"""LRP rules: forward values unchanged, exact restoration, and hand-computed gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from transformers.activations import ACT2FN
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from circuitlab.errors import ConfigError
from circuitlab.lrp.rules import (
    ATTENTION_RULES,
    _attention,
    half_grad,
    identity_rule,
    linearized,
    ln_rule,
)
from circuitlab.models import LoadedModel
from circuitlab.models.adapters import get_adapter
from tiny_models import CASES, build_tiny

IDS = torch.tensor([[3, 7, 11, 5, 2, 9], [4, 4, 60, 12, 1, 8]])


@pytest.fixture(scope="module", params=sorted(CASES))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param))


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _logits(model: nn.Module) -> Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("rule", ATTENTION_RULES)
def test_logits_unchanged_under_rules(tiny: LoadedModel, rule: str) -> None:
    plain = _logits(tiny.model)
    with linearized(tiny.model, tiny.adapter, rule):
        ruled = _logits(tiny.model)
    torch.testing.assert_close(ruled, plain, rtol=0, atol=1e-5)


def test_context_restores_the_model_exactly(tiny: LoadedModel) -> None:
    model = tiny.model
    before_modules = [(name, id(m)) for name, m in model.named_modules()]
    before_impl = model.config._attn_implementation
    plain = _logits(model)
    with pytest.raises(RuntimeError, match="boom"), linearized(model, tiny.adapter, "half"):
        assert _hooks(model) > 0
        assert model.config._attn_implementation != before_impl
        raise RuntimeError("boom")
    with linearized(model, tiny.adapter, "cp_attn"):
        pass
    assert [(name, id(m)) for name, m in model.named_modules()] == before_modules
    assert model.config._attn_implementation == before_impl
    assert _hooks(model) == 0
    assert torch.equal(_logits(model), plain)


def test_rules_change_the_gradient_not_the_value(tiny: LoadedModel) -> None:
    """The linearised backward differs from the plain one (the rules do something) and is finite."""
    emb = tiny.adapter.root(tiny.model, "embed")

    def grad() -> Tensor:
        x = emb(IDS).detach().requires_grad_()
        out = tiny.model(inputs_embeds=x).logits[:, -1, 5].sum()
        return torch.autograd.grad(out, x)[0]

    plain = grad()
    with linearized(tiny.model, tiny.adapter):
        ruled = grad()
    assert torch.isfinite(ruled).all()
    assert not torch.allclose(plain, ruled, atol=1e-6)


def test_unknown_attention_rule_lists_choices(tiny: LoadedModel) -> None:
    with (
        pytest.raises(ConfigError, match="full, half, cp_attn"),
        linearized(tiny.model, tiny.adapter, "softmax"),
    ):
        pass
    assert _hooks(tiny.model) == 0


# ------------------------------------------------------------ hand-computed gradients
def _grad_through(mod: nn.Module, rule, x: Tensor, upstream: Tensor) -> Tensor:
    x = x.clone().requires_grad_()
    y = rule(mod, x, mod(x))
    return torch.autograd.grad((y * upstream).sum(), x)[0]


def test_ln_rule_rmsnorm_gradient_is_the_detached_coefficient() -> None:
    torch.manual_seed(0)
    norm = LlamaRMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6))
    x, g = torch.randn(3, 6), torch.randn(3, 6)
    got = _grad_through(norm, ln_rule(get_adapter("LlamaForCausalLM")), x, g)
    coeff = norm.weight * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(got, g * coeff)


def test_ln_rule_gemma_uses_one_plus_weight() -> None:
    torch.manual_seed(1)
    norm = GemmaRMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6))
    x, g = torch.randn(3, 6), torch.randn(3, 6)
    got = _grad_through(norm, ln_rule(get_adapter("GemmaForCausalLM")), x, g)
    coeff = (1 + norm.weight) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(got, g * coeff)


def test_ln_rule_layernorm_keeps_centring_and_freezes_sigma() -> None:
    torch.manual_seed(2)
    norm = nn.LayerNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6))
        norm.bias.copy_(torch.randn(6))
    x, g = torch.randn(3, 6), torch.randn(3, 6)
    got = _grad_through(norm, ln_rule(get_adapter("GPT2LMHeadModel")), x, g)
    inv_sigma = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    gw = g * norm.weight
    torch.testing.assert_close(got, inv_sigma * (gw - gw.mean(-1, keepdim=True)))


@pytest.mark.parametrize(
    ("name", "ratio"),
    [
        ("silu", torch.sigmoid),
        ("gelu", lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2)))),
    ],
)
def test_identity_rule_gradient_is_act_over_x(name: str, ratio) -> None:
    act = ACT2FN[name]
    x = torch.tensor([-3.0, -0.5, 0.0, 1e-9, 0.7, 4.0])
    got = _grad_through(act, identity_rule(half=False), x, torch.ones_like(x))
    torch.testing.assert_close(got, ratio(x))
    half = _grad_through(act, identity_rule(half=True), x, torch.ones_like(x))
    torch.testing.assert_close(half, 0.5 * ratio(x))


def test_half_rule_splits_a_product_evenly() -> None:
    a, b = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    ga, gb = torch.autograd.grad((half_grad(a) * half_grad(b)).sum(), (a, b))
    torch.testing.assert_close(ga, 0.5 * b.detach())
    torch.testing.assert_close(gb, 0.5 * a.detach())
    # the two halves add up to the product's total first-order relevance a·∂a + b·∂b = 2ab → ab
    torch.testing.assert_close(a.detach() * ga + b.detach() * gb, (a * b).detach())


def test_gated_mlp_neuron_gradients(tiny: LoadedModel) -> None:
    """∂neuron/∂up = ½·act(gate) and ∂neuron/∂gate_pre = ½·up·(act(gate)/gate) under the rules."""
    if tiny.adapter.mlp_kind != "gated":
        pytest.skip("plain MLP")
    ad, model = tiny.adapter, tiny.model
    gate, up, act = (ad.module(model, 0, s) for s in ("gate", "up", "act"))
    seen: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(_m: nn.Module, _a: tuple, out: Tensor) -> None:
            out.retain_grad()
            seen[name] = out

        return hook

    # registered before the rules' hooks, so they see the modules' own outputs
    handles = [gate.register_forward_hook(keep("gate")), up.register_forward_hook(keep("up"))]
    try:
        with linearized(model, ad), ad.capture_neurons(model, [0], detach=False) as neurons:
            model(IDS)
            neurons[0].sum().backward()
    finally:
        for h in handles:
            h.remove()
    g, u = seen["gate"].detach(), seen["up"].detach()
    torch.testing.assert_close(seen["up"].grad, 0.5 * act(g))
    torch.testing.assert_close(seen["gate"].grad, 0.5 * u * act(g) / g, rtol=1e-4, atol=1e-6)


def _attn_grads(rule: str) -> tuple[Tensor, Tensor, Tensor]:
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)[None, None]
    module = nn.Module()
    out, _ = _attention(rule)(module, q, k, v, mask, scaling=0.5)  # type: ignore[arg-type]
    grads = torch.autograd.grad(
        (out * torch.linspace(-1, 1, 4)).sum(), (q, k, v), allow_unused=True
    )
    return tuple(torch.zeros_like(q) if g is None else g for g in grads)  # type: ignore[return-value]


def test_attention_rules_against_hand_derived_ratios() -> None:
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)[None, None]
    probs = torch.softmax(q @ k.transpose(2, 3) * 0.5 + mask, -1)
    ref = torch.autograd.grad(((probs @ v) * torch.linspace(-1, 1, 4)).sum(), (q, k, v))
    full = _attn_grads("full")
    for got, want in zip(full, ref, strict=True):
        torch.testing.assert_close(got, want)
    # half: the AV product halves every gradient, the QK product halves q's and k's again
    for got, want, factor in zip(_attn_grads("half"), ref, (0.25, 0.25, 0.5), strict=True):
        torch.testing.assert_close(got, factor * want)
    # cp_attn: the pattern is a constant
    gq, gk, gv = _attn_grads("cp_attn")
    assert gq.abs().max() == 0 and gk.abs().max() == 0
    torch.testing.assert_close(gv, ref[2])


def test_model_attention_rule_is_really_used(tiny: LoadedModel) -> None:
    """Under `cp_attn` no gradient reaches the query projection's weights; under full/half it does."""
    q_site = "q" if tiny.adapter.has("q") else "qkv"
    q_proj = tiny.adapter.module(tiny.model, 1, q_site)
    out: dict[str, Tensor] = {}

    def keep(_m: nn.Module, _a: tuple, y: Tensor) -> None:
        y.retain_grad()
        out["q"] = y

    for rule, expect_zero in (("cp_attn", True), ("full", False)):
        handle = q_proj.register_forward_hook(keep)
        try:
            with linearized(tiny.model, tiny.adapter, rule):
                tiny.model(IDS).logits[:, -1, 5].sum().backward()
        finally:
            handle.remove()
        grad = out["q"].grad
        if grad is None:  # nothing flowed back at all
            grad = torch.zeros_like(out["q"])
        if q_site == "qkv":  # only the query block of the fused projection must be zero
            grad = grad[..., : tiny.dims.n_heads * tiny.dims.head_dim]
        assert (grad.abs().max() == 0) == expect_zero, rule
        tiny.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GemmaForCausalLM"])
def test_only_cp_attn_conserves_the_metric(arch: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On a bias-free model the relevance at the input embeddings sums to the logit under
    `cp_attn` (the linearised network is homogeneous in them); `full` and `half` keep the
    softmax's gradient and do not sum to it."""
    lm = build_tiny(arch, tmp_path)
    ids = torch.tensor([[3, 7, 11, 5, 9, 2]])
    embeds = lm.model.get_input_embeddings()(ids).detach()

    def ratio(rule: str, token: int) -> float:
        x = embeds.clone().requires_grad_(True)
        with linearized(lm.model, lm.adapter, rule):
            y = lm.model(inputs_embeds=x).logits[0, -1, token]
            (grad,) = torch.autograd.grad(y, x)
        return float((grad * x).sum() / y.detach())

    tokens = (13, 20, 40)
    assert [ratio("cp_attn", t) for t in tokens] == pytest.approx([1.0] * 3, abs=1e-4)
    if arch == "LlamaForCausalLM":  # the tiny Gemma's attention is too flat to tell
        for rule in ("full", "half"):
            assert max(abs(ratio(rule, t) - 1.0) for t in tokens) > 0.01, rule


def test_the_old_cp_name_says_what_it_is_now() -> None:
    from pydantic import ValidationError

    from circuitlab.lrp.settings import LrpConfig

    with pytest.raises(ValidationError, match="now called 'cp_attn'"):
        LrpConfig(attention_rule="cp")  # type: ignore[arg-type]
