"""The `transformer_lens` backend: TransformerLens 4's `TransformerBridge` over the HF model.

circuitlab's own adapters (`circuitlab.models.adapters`) cover the Llama, Gemma and GPT-2
families. A model of any other architecture that TransformerLens 4 supports (GPT-NeoX/Pythia,
OLMo, Phi, Falcon, …) loads with ``backend: transformer_lens``: the HF model is wrapped once by
a `TransformerBridge` (TL's own per-family architecture adapter), and the stages that need only
hook points run on the bridge's hooks — model evaluation, dataset checks, head pruning, EAP,
exact and approximate ACDC (`circuitlab.acdc.hooked`), CAA vectors and residual-stream CAA
steering. Stages that need circuitlab's knowledge of the MLP internals fail at their start
with `needs_adapter` (`STAGES` lists both kinds; the README's model table is built from it).

Hook names used here (the bridge's canonical TL names): ``blocks.{l}.hook_resid_post`` (the
residual after block ``l``), ``blocks.{l}.hook_mlp_out``; the edge graph's hooks are listed in
`circuitlab.acdc.hooked`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from circuitlab.errors import ModelError
from circuitlab.stages import STAGES as ALL_STAGES
from circuitlab.stages import hook_only_labels

if TYPE_CHECKING:  # torch stays out of the import: the Snakefile reads `STAGES`
    from torch import Tensor, nn

    from circuitlab.models.adapters import ModelDims

#: What each backend runs: every rule that loads the model or needs the adapter → None when the
#: `transformer_lens` backend runs it, else what the missing adapter would provide (the native
#: backend runs all of them). Read off `circuitlab.stages.STAGES`; the README's model table is
#: checked against it.
STAGES: dict[str, str | None] = {
    rule: stage.reason
    for rule, stage in ALL_STAGES.items()
    if stage.loads_model or stage.needs_adapter
}


def needs_adapter_message(stage: str, model: str) -> str:
    """What a stage that needs an adapter says about a transformer_lens-backend model."""
    return (
        f"{stage} needs circuitlab's architecture adapter (it works on the MLP internals), and "
        f"{model} runs with backend: transformer_lens, which gives the hook-only stages "
        f"({', '.join(hook_only_labels())}); see README, 'Models'"
    )


def bridge_architectures() -> frozenset[str]:
    """The HF architecture names TransformerLens 4's bridge has an adapter for."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return frozenset(SUPPORTED_ARCHITECTURES)


def is_causal_lm(arch: str) -> bool:
    """Whether an HF architecture name is a causal LM (circuitlab's stages need one)."""
    return arch.endswith(("ForCausalLM", "LMHeadModel"))


def check_bridge_supports(arch: str) -> None:
    """ModelError before any weight is read when the bridge cannot wrap ``arch``."""
    if not is_causal_lm(arch):
        raise ModelError(
            f"{arch} is not a causal language model (*ForCausalLM / *LMHeadModel); circuitlab's "
            "stages read next-token logits"
        )
    try:
        supported = bridge_architectures()
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelError(
            "backend: transformer_lens needs the transformer-lens package (pip install -e .)"
        ) from exc
    if arch not in supported:
        raise ModelError(
            f"TransformerLens 4 has no bridge adapter for {arch!r} either "
            f"({len(supported)} architectures are supported, see "
            "transformer_lens.factories.architecture_adapter_factory); circuitlab cannot run it"
        )


def build_bridge(model: nn.Module, arch: str) -> Any:
    """Wrap a loaded HF causal LM in a `TransformerBridge` (in place: the model's forward is
    unchanged, its submodules become bridge components). Edge patching turns on the per-head
    hooks it needs when it is built (`circuitlab.acdc.hooked.hooked`)."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    try:
        bridge = build_bridge_from_module(
            model, arch, hf_config=model.config, model_name=str(model.config.name_or_path)
        )
    except Exception as exc:  # TL raises many types: name the model and stop
        raise ModelError(
            f"TransformerLens could not wrap this {arch} model: {type(exc).__name__}: {exc}"
        ) from exc
    bridge.eval()
    return bridge


def bridge_dims(bridge: Any) -> ModelDims:
    """The model's sizes as the bridge's config states them."""
    from circuitlab.models.adapters import ModelDims

    c = bridge.cfg
    return ModelDims(
        n_layers=int(c.n_layers),
        d_model=int(c.d_model),
        d_mlp=int(c.d_mlp or 0),  # None for mixture-of-experts MLPs (no neuron stage runs)
        n_heads=int(c.n_heads),
        n_kv_heads=int(getattr(c, "n_key_value_heads", None) or c.n_heads),
        head_dim=int(c.d_head),
        vocab_size=int(c.d_vocab),
    )


def parallel_blocks(bridge: Any) -> bool:
    """Whether attention and MLP read the same residual (GPT-NeoX, Phi, GPT-J)."""
    return bool(getattr(bridge.cfg, "parallel_attn_mlp", False))


def require_hooks(bridge: Any, names: Iterable[str], purpose: str) -> None:
    """ModelError naming the hooks the bridge lacks for ``purpose``."""
    missing = [n for n in names if n not in bridge.hook_dict]
    if missing:
        arch = type(bridge.original_model).__name__
        raise ModelError(
            f"{purpose} needs TransformerLens hooks that the {arch} bridge does not have: "
            f"{', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}"
        )


@contextmanager
def edit_hooks(
    bridge: Any, name: Callable[[int], str], fn: Callable[[int, Tensor], Tensor], layers: list[int]
) -> Iterator[None]:
    """Inside the block, hook ``name(layer)`` returns ``fn(layer, x)`` during every forward of
    the HF model or the bridge; removed on exit, even on error."""

    def make(layer: int) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            return fn(layer, x)

        return hook

    hooks = [(name(layer), make(layer)) for layer in layers]
    require_hooks(bridge, [n for n, _ in hooks], "this stage")
    with bridge.hooks(fwd_hooks=hooks):
        yield


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"
