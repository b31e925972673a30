"""LRP linearisation rules, applied to an unmodified Hugging Face model inside a context.

Under `linearized(model, adapter)` the forward pass computes exactly the same values as the
plain model, but the backward pass follows the LRP rules, and gradient × activation at the MLP
neurons is the neurons' relevance for the output metric:

* **LN-rule** — every normalisation's per-token coefficient is a constant in the backward
  pass: RMSNorm `w · x · rsqrt(mean x² + eps)` back-propagates `w · rsqrt(…)`; Gemma's
  `(1 + w)` form likewise; LayerNorm keeps its (linear) centring and treats `1/σ` as constant.
* **Identity rule** for the MLP non-linearity: `act(x) = x · (act(x)/x)` with the ratio
  constant (for SiLU the ratio is the sigmoid; for GELU it is Φ(x)).
* **Half-rule** for gated MLPs: in `act(gate) × up` each factor receives half the gradient
  (the Shapley split of a product).
* **Attention** (`attention_rule`): `full` runs HF's eager attention, so gradients flow
  through queries, keys and values (the seed's behaviour); `half` applies the half-rule to the
  `q·kᵀ` and `softmax·v` products (AttnLRP's product rule, without its softmax rule);
  `cp_attn` stops the gradient at q and k, so the attention pattern is a constant — the
  attention of CP-LRP, combined with the MLP rules above. It is not the CP-LRP of the
  literature, which treats the MLP differently; the name says which part it shares.

Only `cp_attn` is a *decomposition*: with the pattern, the norm coefficients and the activation
ratios constant and the gate × up product split in half, a bias-free model (Llama, Mistral,
Qwen2, Gemma) is linear and homogeneous in its input embeddings along the backward pass, so the
relevance at the embeddings sums to the metric (`tests/lrp/test_rules.py` checks it; biases and
learned position embeddings, as in GPT-2, take their own share). Under `full` and `half` the
softmax's gradient is kept and the relevances do not sum to the metric: they are attributions,
useful for ranking neurons, not a split of the output.

Every rule is a *straight-through* replacement: the module's own output is kept as the forward
value (`out.detach()`) and only the gradient comes from the linearised expression, so logits
are bit-identical to the plain model's. Nothing is replaced in the object graph: the rules are
forward hooks placed through the adapter, and the attention rules are functions registered in
transformers' `AttentionInterface` that the context selects through
`config._attn_implementation`; all of it is undone on exit, exceptions included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from circuitlab.errors import ConfigError
from circuitlab.models.adapters.base import Adapter

AttentionRule = Literal["full", "half", "cp_attn"]
ATTENTION_RULES: tuple[str, ...] = get_args(AttentionRule)

#: Below this |x| the identity-rule ratio act(x)/x is replaced by its limit at 0 (1/2 for the
#: SiLU/GELU family), which avoids 0/0 without changing the forward value.
_RATIO_EPS = 1e-6


# --------------------------------------------------------------------- primitives
def straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """`value` in the forward pass, the gradient of `surrogate` in the backward pass.

    `surrogate - surrogate.detach()` is exactly zero, so the forward value is bit-identical.
    """
    return value.detach() + (surrogate - surrogate.detach())


class _HalfGrad(torch.autograd.Function):
    """Identity forward, gradient × 1/2 backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad * 0.5


def half_grad(x: Tensor) -> Tensor:
    """Halve the gradient flowing into `x`. Wrapping both factors of a product (elementwise
    or matrix) gives each factor half of its gradient: the half-rule."""
    return _HalfGrad.apply(x)


def ln_rule(adapter: Adapter) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """The LN-rule for the adapter's norm kind, as an output-replacing function."""

    def rule(mod: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        eps = _module_eps(mod)
        x32 = x.float()
        if adapter.norm == "layernorm":
            centred = x32 - x32.mean(-1, keepdim=True)
            inv_sigma = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps).detach()
            lin = centred * inv_sigma
            if getattr(mod, "weight", None) is not None:
                lin = lin * mod.weight.float()
            if getattr(mod, "bias", None) is not None:
                lin = lin + mod.bias.float()
        else:
            inv_rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps).detach()
            lin = x32 * inv_rms
            weight = getattr(mod, "weight", None)
            if weight is not None:
                lin = lin * (1.0 + weight.float() if adapter.norm == "rmsnorm_plus_one" else weight)
        return straight_through(out, lin.to(out.dtype))

    return rule


def identity_rule(half: bool) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """The identity rule for an activation module; with `half`, also the half-rule's share for
    the activation's factor of the gate × up product."""

    def rule(_mod: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        safe = x.abs() > _RATIO_EPS
        ratio = torch.where(safe, out / torch.where(safe, x, torch.ones_like(x)), 0.5)
        y = straight_through(out, x * ratio.detach())
        return half_grad(y) if half else y

    return rule


def _half_output(_mod: nn.Module, _x: Tensor, out: Tensor) -> Tensor:
    return half_grad(out)


def _module_eps(mod: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(mod, name, None)
        if isinstance(value, int | float):
            return float(value)
    raise ConfigError(f"cannot find the epsilon of norm module {type(mod).__name__}")


# ---------------------------------------------------------------------- attention
def _repeat_kv(x: Tensor, groups: int) -> Tensor:
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def _attention(rule: AttentionRule) -> Callable[..., tuple[Tensor, Tensor]]:
    """Eager attention (HF's `eager_attention_forward` semantics: GQA, additive mask, fp32
    softmax, optional logit soft-capping) with the gradient rule `rule`."""

    def attend(
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        softcap: float | None = None,
        **_: Any,
    ) -> tuple[Tensor, Tensor]:
        groups = int(getattr(module, "num_key_value_groups", 1))
        key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
        if scaling is None:
            scaling = query.size(-1) ** -0.5
        if rule == "cp_attn":
            query, key = query.detach(), key.detach()
        elif rule == "half":
            query, key = half_grad(query), half_grad(key)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, : key.shape[-2]]
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        probs = nn.functional.dropout(probs, p=dropout, training=module.training)
        if rule == "half":
            probs, value = half_grad(probs), half_grad(value)
        out = torch.matmul(probs, value).transpose(1, 2).contiguous()
        return out, probs

    return attend


def _implementation_name(rule: AttentionRule) -> str:
    return f"circuitlab_lrp_{rule}"


def _register_attention_rules() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    for rule in ATTENTION_RULES:
        if rule == "full":  # HF's own eager attention
            continue
        name = _implementation_name(rule)  # type: ignore[arg-type]
        AttentionInterface.register(name, _attention(rule))  # type: ignore[arg-type]
        AttentionMaskInterface.register(name, eager_mask)


_register_attention_rules()


@contextmanager
def attention_implementation(model: nn.Module, name: str) -> Iterator[None]:
    """Select transformers' attention implementation `name` inside the block."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def check_attention_rule(rule: str) -> AttentionRule:
    if rule not in ATTENTION_RULES:
        raise ConfigError(
            f"unknown attention rule {rule!r}; choose one of {', '.join(ATTENTION_RULES)}"
        )
    return rule  # type: ignore[return-value]


# -------------------------------------------------------------------------- entry
@contextmanager
def linearized(
    model: nn.Module, adapter: Adapter, attention_rule: str = "full", *, lrp: bool = True
) -> Iterator[nn.Module]:
    """Apply the LRP rules to `model` inside the block (see the module docstring).

    With `lrp=False` only the attention implementation is switched to eager and no rule is
    applied: plain gradient × activation, the baseline the calibration compares against.
    """
    rule = check_attention_rule(attention_rule)
    impl = "eager" if rule == "full" else _implementation_name(rule)
    # keyed by module identity: a module shared between layers gets its rule once
    hooks: dict[int, tuple[nn.Module, Callable[[nn.Module, Tensor, Tensor], Tensor]]] = {}
    if lrp:
        norm = ln_rule(adapter)
        hooks |= {id(mod): (mod, norm) for mod in adapter.norm_modules(model)}
        gated = adapter.mlp_kind == "gated"
        for layer in range(len(adapter.layers(model))):
            act = adapter.module(model, layer, "act")
            hooks[id(act)] = (act, identity_rule(half=gated))
            if gated:
                up = adapter.module(model, layer, "up")
                hooks[id(up)] = (up, _half_output)
    with ExitStack() as stack:
        stack.enter_context(attention_implementation(model, impl))
        stack.enter_context(adapter.replace_outputs(hooks.values()))
        yield model
