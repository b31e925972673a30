"""Architecture adapters: where a family keeps its layers, norms, attention and MLP.

An adapter is *data*: a frozen `Adapter` holds module paths and config key names, and the
generic methods below read them. Each family file (`llama.py`, `gemma.py`, `gpt2.py`) builds
one instance and registers it here under the Hugging Face class names it covers
(`config.architectures[0]`). Adding an architecture touches its family file and its test only.

This module is the only place in circuitlab that places plain torch hooks on a model
(`capture_neurons`, `edit_neurons`, `edit_residual`, `replace_outputs`); they always remove
them on exit, exceptions included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from circuitlab.errors import ModelError

Norm = Literal["rmsnorm", "rmsnorm_plus_one", "layernorm"]
MlpKind = Literal["gated", "plain"]
Layout = Literal["linear", "conv1d"]

#: Sites a layer exposes by module path (fields of `Adapter` holding a relative path).
LAYER_SITES: tuple[str, ...] = (
    "attn", "q", "k", "v", "o", "qkv", "q_norm", "k_norm",
    "mlp", "gate", "up", "down", "act",
    "ln_attn", "ln_mlp", "ln_attn_post", "ln_mlp_post",
)  # fmt: skip

#: Sites of the whole model (fields of `Adapter` holding a path from the model root).
MODEL_SITES: tuple[str, ...] = ("blocks", "embed", "pos_embed", "final_norm", "unembed")

#: Our site vocabulary → TransformerLens 4 (`TransformerBridge`) hook names.
HOOK_NAMES: dict[str, str] = {
    "neurons": "blocks.{layer}.mlp.hook_post",
    "mlp_pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_in": "blocks.{layer}.mlp.hook_in",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "attn_z": "blocks.{layer}.attn.hook_z",
    "attn_q": "blocks.{layer}.attn.hook_q",
    "attn_k": "blocks.{layer}.attn.hook_k",
    "attn_v": "blocks.{layer}.attn.hook_v",
}

#: Projections whose weights `proj_weight` returns, and their (fused) source.
PROJECTIONS: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class ModelDims:
    """Sizes read from a model config through an adapter's key names."""

    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int

    @property
    def n_neurons(self) -> int:
        """All MLP neurons of the model (`n_layers * d_mlp`)."""
        return self.n_layers * self.d_mlp


@dataclass(frozen=True)
class Adapter:
    """Declarative description of one architecture family.

    Model-level paths start at the `*ForCausalLM` root; layer-level paths start at one decoder
    layer (`blocks[l]`). `None` means the family has no such module.
    """

    family: str
    # -- model-level module paths
    blocks: str  # the ModuleList of decoder layers ("model.layers", "transformer.h")
    embed: str
    final_norm: str
    unembed: str
    # -- layer-level module paths
    attn: str
    o: str
    mlp: str
    up: str
    down: str
    act: str
    ln_attn: str
    ln_mlp: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None  # fused q|k|v projection, split along its output features
    q_norm: str | None = None  # per-head norms on queries/keys (Gemma 3)
    k_norm: str | None = None
    gate: str | None = None
    ln_attn_post: str | None = None  # norms on the attention/MLP *outputs* (Gemma 2/3)
    ln_mlp_post: str | None = None
    pos_embed: str | None = None  # learned absolute positions (GPT-2)
    # -- how the pieces compute
    norm: Norm = "rmsnorm"
    mlp_kind: MlpKind = "gated"
    proj_layout: Layout = "linear"  # "conv1d": weight is [in, out] (GPT-2 `Conv1D`)
    embed_scale: Literal["none", "sqrt_d_model"] = "none"  # applied inside the embed module
    # -- config key names
    cfg_n_layers: str = "num_hidden_layers"
    cfg_d_model: str = "hidden_size"
    cfg_d_mlp: str = "intermediate_size"
    cfg_d_mlp_factor: int | None = None  # d_mlp = factor * d_model when the key is None
    cfg_n_heads: str = "num_attention_heads"
    cfg_n_kv_heads: str | None = "num_key_value_heads"  # None → n_heads
    cfg_head_dim: str | None = "head_dim"  # None (or unset) → d_model // n_heads
    cfg_vocab: str = "vocab_size"
    cfg_act: str = "hidden_act"  # name of the MLP activation function in the config
    cfg_norm_eps: str = "rms_norm_eps"
    cfg_logit_softcap: str | None = None  # final logit soft-capping (Gemma 2/3)
    cfg_attn_logit_softcap: str | None = None  # attention-score soft-capping (Gemma 2/3)

    def __post_init__(self) -> None:
        if (self.qkv is None) == (self.q is None or self.k is None or self.v is None):
            raise ValueError(f"adapter {self.family}: give either q/k/v or a fused qkv")
        if (self.mlp_kind == "gated") != (self.gate is not None):
            raise ValueError(f"adapter {self.family}: a gate path iff mlp_kind == 'gated'")

    # ----------------------------------------------------------------- config
    def dims(self, config: Any) -> ModelDims:
        """Read the model's sizes from its HF config."""

        def get(key: str | None) -> int | None:
            value = getattr(config, key, None) if key else None
            return int(value) if value is not None else None

        required = {
            "n_layers": self.cfg_n_layers,
            "d_model": self.cfg_d_model,
            "n_heads": self.cfg_n_heads,
            "vocab": self.cfg_vocab,
        }
        got = {name: get(key) for name, key in required.items()}
        d_mlp = get(self.cfg_d_mlp)
        if d_mlp is None and self.cfg_d_mlp_factor is not None and got["d_model"] is not None:
            d_mlp = self.cfg_d_mlp_factor * got["d_model"]
        missing = [required[name] for name, v in got.items() if v is None]
        if d_mlp is None:
            missing.append(self.cfg_d_mlp)
        if missing or d_mlp is None:
            raise ModelError(
                f"{self.family} config lacks {', '.join(missing)}; is config.json from a "
                f"{self.family}-family model?"
            )
        n_layers, d_model, n_heads, vocab = (int(got[k] or 0) for k in required)
        n_kv = get(self.cfg_n_kv_heads) or n_heads
        head_dim = get(self.cfg_head_dim) or d_model // n_heads
        return ModelDims(n_layers, d_model, d_mlp, n_heads, n_kv, head_dim, vocab)

    def act_name(self, config: Any) -> str:
        """The HF activation name (`ACT2FN` key) the MLP uses, e.g. "silu", "gelu_new"."""
        return str(getattr(config, self.cfg_act))

    def norm_eps(self, config: Any) -> float:
        """The epsilon of the family's norms."""
        return float(getattr(config, self.cfg_norm_eps))

    def logit_softcap(self, config: Any) -> float | None:
        """Final logit soft-capping value, or None when the family/config has none."""
        return _optional_float(config, self.cfg_logit_softcap)

    def attn_logit_softcap(self, config: Any) -> float | None:
        """Attention-score soft-capping value, or None when the family/config has none."""
        return _optional_float(config, self.cfg_attn_logit_softcap)

    # ---------------------------------------------------------------- modules
    def root(self, model: nn.Module, site: str) -> nn.Module:
        """A model-level module: "blocks", "embed", "pos_embed", "final_norm", "unembed"."""
        if site not in MODEL_SITES:
            raise KeyError(f"unknown model-level site {site!r}; choose one of {MODEL_SITES}")
        return _resolve(model, getattr(self, site), self.family, site)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        mods = self.root(model, "blocks")
        if not isinstance(mods, nn.ModuleList):
            raise ModelError(f"{self.family}: {self.blocks} is not a ModuleList")
        return mods

    def layer(self, model: nn.Module, layer: int) -> nn.Module:
        mods = self.layers(model)
        if not -len(mods) <= layer < len(mods):
            raise IndexError(f"layer {layer} out of range for a {len(mods)}-layer model")
        return mods[layer]

    def module(self, model: nn.Module, layer: int, site: str) -> nn.Module:
        """A layer-level module by site name (see `LAYER_SITES`)."""
        if site not in LAYER_SITES:
            raise KeyError(f"unknown layer site {site!r}; choose one of {LAYER_SITES}")
        return _resolve(self.layer(model, layer), getattr(self, site), self.family, site)

    def has(self, site: str) -> bool:
        """Whether this family has a module at `site`."""
        return getattr(self, site, None) is not None

    def down_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self.module(model, layer, "down")

    # ---------------------------------------------------------------- weights
    def proj_weight(self, model: nn.Module, layer: int, site: str) -> Tensor:
        """A projection's weight as `[out_features, in_features]` whatever the layout.

        For a fused qkv projection, "q", "k" and "v" are the matching row blocks.
        """
        w, _ = self._proj(model, layer, site)
        return w

    def proj_bias(self, model: nn.Module, layer: int, site: str) -> Tensor | None:
        """A projection's bias `[out_features]`, or None."""
        _, b = self._proj(model, layer, site)
        return b

    def down_proj_weight(self, model: nn.Module, layer: int) -> Tensor:
        """`[d_model, d_mlp]`: column i is neuron i's output direction in the residual stream."""
        return self.proj_weight(model, layer, "down")

    def _proj(self, model: nn.Module, layer: int, site: str) -> tuple[Tensor, Tensor | None]:
        if site not in PROJECTIONS:
            raise KeyError(f"unknown projection {site!r}; choose one of {PROJECTIONS}")
        if site in ("q", "k", "v") and self.qkv is not None:
            mod = self.module(model, layer, "qkv")
            w, b = self._oriented(mod)
            dims = self.dims(_config(model))
            sizes = [dims.n_heads * dims.head_dim] + [dims.n_kv_heads * dims.head_dim] * 2
            if sum(sizes) != w.shape[0]:
                raise ModelError(
                    f"{self.family}: fused qkv has {w.shape[0]} outputs, expected {sum(sizes)}"
                )
            i = "qkv".index(site)
            start = sum(sizes[:i])
            rows = slice(start, start + sizes[i])
            return w[rows], (b[rows] if b is not None else None)
        return self._oriented(self.module(model, layer, site))

    def _oriented(self, mod: nn.Module) -> tuple[Tensor, Tensor | None]:
        w = mod.weight
        if not isinstance(w, Tensor):
            raise ModelError(f"{self.family}: {type(mod).__name__} has no weight tensor")
        b = getattr(mod, "bias", None)
        return (w.T if self.proj_layout == "conv1d" else w), (b if isinstance(b, Tensor) else None)

    # ------------------------------------------------------------------ hooks
    @staticmethod
    def hook_name(site: str, layer: int) -> str:
        """TransformerLens 4 hook name for one of our sites (see `HOOK_NAMES`)."""
        if site not in HOOK_NAMES:
            raise KeyError(f"unknown hook site {site!r}; choose one of {sorted(HOOK_NAMES)}")
        return HOOK_NAMES[site].format(layer=layer)

    def _layer_ids(self, model: nn.Module, layers: Iterable[int] | None) -> list[int]:
        n = len(self.layers(model))
        ids = list(range(n)) if layers is None else [int(layer) for layer in layers]
        bad = [layer for layer in ids if not 0 <= layer < n]
        if bad:
            raise IndexError(f"layers {bad} out of range for a {n}-layer model")
        return ids

    @contextmanager
    def capture_neurons(
        self, model: nn.Module, layers: Iterable[int] | None = None, *, detach: bool = True
    ) -> Iterator[dict[int, Tensor]]:
        """Yield a dict filled, during forward passes inside the block, with each layer's
        MLP neuron activations (the down-projection input, `[batch, pos, d_mlp]`).

        A later forward pass overwrites an earlier one. With `detach=False` the tensors keep
        their autograd graph (for attribution). Hooks are removed on exit, even on error.
        """
        captured: dict[int, Tensor] = {}

        def make(layer: int) -> Callable[..., None]:
            def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
                captured[layer] = args[0].detach() if detach else args[0]

            return hook

        with self._pre_hooks(model, self._layer_ids(model, layers), make):
            yield captured

    @contextmanager
    def edit_neurons(
        self,
        model: nn.Module,
        fn: Callable[[int, Tensor], Tensor],
        layers: Iterable[int] | None = None,
    ) -> Iterator[None]:
        """Replace each layer's neuron activations (down-projection input) by `fn(layer, acts)`
        during forward passes inside the block. `fn` must keep the shape. Hooks are removed
        on exit, even on error.
        """

        def make(layer: int) -> Callable[..., tuple[Any, ...]]:
            def hook(_mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
                x = args[0]
                new = fn(layer, x)
                if not isinstance(new, Tensor) or new.shape != x.shape:
                    got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                    raise ModelError(
                        f"edit_neurons: the edit function returned {got} for layer {layer}; "
                        f"it must return a tensor of the input's shape {tuple(x.shape)}"
                    )
                return (new, *args[1:])

            return hook

        with self._pre_hooks(model, self._layer_ids(model, layers), make):
            yield

    @contextmanager
    def edit_residual(
        self,
        model: nn.Module,
        fn: Callable[[int, Tensor], Tensor],
        layers: Iterable[int] | None = None,
    ) -> Iterator[None]:
        """Replace each layer's output residual stream (`blocks.{layer}.hook_resid_post`,
        `[batch, pos, d_model]`) by `fn(layer, resid)` during forward passes inside the block;
        the next layer (or the final norm) reads the edited stream. `fn` must keep the shape
        (return its input unchanged to only read it). Hooks are removed on exit, even on error.
        """

        def make(layer: int) -> Callable[..., Any]:
            def hook(_mod: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
                hs = out[0] if isinstance(out, tuple) else out
                new = fn(layer, hs)
                if not isinstance(new, Tensor) or new.shape != hs.shape:
                    got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                    raise ModelError(
                        f"edit_residual: the edit function returned {got} for layer {layer}; "
                        f"it must return a tensor of the residual's shape {tuple(hs.shape)}"
                    )
                if new is hs:
                    return None
                return (new, *out[1:]) if isinstance(out, tuple) else new

            return hook

        handles = []
        try:
            for layer in self._layer_ids(model, layers):
                handles.append(self.layer(model, layer).register_forward_hook(make(layer)))
            yield
        finally:
            for h in handles:
                h.remove()

    def norm_modules(self, model: nn.Module) -> list[nn.Module]:
        """Every normalisation module of the model: per-layer norms (inputs, outputs, q/k)
        and the final norm. All compute `self.norm`."""
        sites = [s for s in ("ln_attn", "ln_mlp", "ln_attn_post", "ln_mlp_post") if self.has(s)]
        sites += [s for s in ("q_norm", "k_norm") if self.has(s)]
        mods = [
            self.module(model, layer, s) for layer in self._layer_ids(model, None) for s in sites
        ]
        return [*mods, self.root(model, "final_norm")]

    @contextmanager
    def replace_outputs(
        self, hooks: Iterable[tuple[nn.Module, Callable[[nn.Module, Tensor, Tensor], Tensor]]]
    ) -> Iterator[None]:
        """Inside the block, each `module`'s output becomes `fn(module, input, output)`.

        The generic door through which other packages (the LRP rules) change what a module
        computes without replacing it: the object graph stays the same and the hooks are
        removed on exit, even on error.
        """

        def wrap(fn: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
            def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
                return fn(mod, args[0], out)

            return hook

        handles = []
        try:
            for mod, fn in hooks:
                handles.append(mod.register_forward_hook(wrap(fn)))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def _pre_hooks(
        self, model: nn.Module, layers: Sequence[int], make: Callable[[int], Callable[..., Any]]
    ) -> Iterator[None]:
        handles = []
        try:
            for layer in layers:
                handles.append(self.down_proj(model, layer).register_forward_pre_hook(make(layer)))
            yield
        finally:
            for h in handles:
                h.remove()


def _resolve(root: nn.Module, path: str | None, family: str, site: str) -> nn.Module:
    if path is None:
        raise ModelError(f"the {family} adapter has no '{site}' module")
    try:
        mod = root.get_submodule(path)
    except AttributeError as exc:
        raise ModelError(
            f"{family} adapter: no module at '{path}' (site '{site}') in "
            f"{type(root).__name__}; the model does not match its declared architecture"
        ) from exc
    return mod


def _optional_float(config: Any, key: str | None) -> float | None:
    value = getattr(config, key, None) if key else None
    return float(value) if value else None


def _config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise ModelError(f"{type(model).__name__} has no `.config`; pass a Hugging Face model")
    return config


# --------------------------------------------------------------------- registry
ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter, architectures: Sequence[str]) -> Adapter:
    """Register `adapter` under each HF architecture name (`config.architectures[0]`)."""
    for arch in architectures:
        if arch in ADAPTERS:
            raise RuntimeError(f"architecture {arch!r} registered twice")
        ADAPTERS[arch] = adapter
    return adapter


def supported_architectures() -> list[str]:
    return sorted(ADAPTERS)


def architecture_of(model_or_config: Any) -> str:
    """The HF architecture name of a model, a config, or the name itself."""
    if isinstance(model_or_config, str):
        return model_or_config
    if isinstance(model_or_config, nn.Module):
        name = type(model_or_config).__name__
        if name in ADAPTERS:
            return name
        model_or_config = _config(model_or_config)
    archs = getattr(model_or_config, "architectures", None)
    if not archs:
        raise ModelError(
            f"the model config ({type(model_or_config).__name__}) names no architecture "
            "(`architectures` is empty); save the model with `save_pretrained` from a "
            f"*ForCausalLM class. Supported: {', '.join(supported_architectures())}"
        )
    return str(archs[0])


def get_adapter(model_or_config: Any) -> Adapter:
    """The adapter for a model, HF config or architecture name; ModelError if unsupported."""
    arch = architecture_of(model_or_config)
    if arch not in ADAPTERS:
        raise ModelError(
            f"unsupported architecture {arch!r}; supported: {', '.join(supported_architectures())}"
        )
    return ADAPTERS[arch]
