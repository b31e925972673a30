"""The native patch layer's view of a model: per-block weights and modules read from the HF
model (`read_weights` → `ModelWeights`), or a clear ModelError for an architecture the patch
layer cannot reproduce exactly. Never mutates the model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from circuitlab.acdc.batch import require_one_device
from circuitlab.errors import ConfigError, ModelError
from circuitlab.models.adapters import ModelDims
from circuitlab.models.loading import LoadedModel


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """One block's modules and per-head weights (views of, or reshaped, HF parameters)."""

    ln_attn: nn.Module
    ln_mlp: nn.Module
    mlp: nn.Module
    wq: Tensor  # [n_heads, head_dim, d_model]
    bq: Tensor | None  # [n_heads, head_dim]
    wk: Tensor  # [n_kv_heads, head_dim, d_model]
    bk: Tensor | None
    wv: Tensor  # [n_kv_heads, head_dim, d_model]
    bv: Tensor | None
    wo: Tensor  # [n_heads, d_model, head_dim]
    bo: Tensor | None  # [d_model]
    scaling: float
    window: int | None  # sliding-window size, None for full attention


@dataclass(frozen=True, eq=False)
class ModelWeights:
    """What the native patch layer (`circuitlab.acdc.patch.PatchModel`) computes with: the
    blocks' weights and the HF modules it calls (embeddings, final norm, unembedding, rotary
    embedding). ``dims`` are the model's, except ``n_kv_heads = n_heads`` on a
    per-query-head graph (`read_weights`' ``kv_edges``)."""

    dims: ModelDims
    layers: tuple[LayerWeights, ...] = field(repr=False)
    embed: nn.Module = field(repr=False)
    pos_embed: nn.Module | None = field(repr=False)
    rotary: nn.Module | None = field(repr=False)
    final_norm: nn.Module = field(repr=False)
    unembed: nn.Module = field(repr=False)

    @property
    def device(self) -> torch.device:
        return self.layers[0].wq.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].wq.dtype


KV_EDGES: tuple[str, ...] = ("kv_head", "query_head")


def read_weights(loaded: LoadedModel, *, kv_edges: str = "kv_head") -> ModelWeights:
    """The native patch layer's view of a model loaded with a circuitlab adapter. Raises
    ModelError for an architecture whose forward pass it cannot reproduce exactly (norms on
    attention/MLP outputs, per-head q/k norms, soft-capping, unknown attention layer types,
    a model sharded over devices), naming the feature.

    ``kv_edges``: under grouped-query attention, whether the graph's K and V inputs are per
    KV head (``kv_head``, the model's real structure: one input feeds every query head of its
    group) or per query head (``query_head``: each query head reads its own copy of its
    group's K/V projection, as MIB's EAP-IG graph on TransformerLens with
    ``ungroup_grouped_query_attention``; the same function, more edges). Without GQA both are
    the same graph."""
    if kv_edges not in KV_EDGES:
        raise ConfigError(f"kv_edges {kv_edges!r} is unknown; choose one of {KV_EDGES}")
    model, adapter = loaded.model, loaded.adapter
    if adapter is None:
        raise ModelError(
            "the native patch layer needs a circuitlab adapter; this model was loaded with "
            "the transformer_lens backend (`circuitlab.acdc.backend.patchable` picks its patch "
            "layer)"
        )
    require_one_device(loaded, "the ACDC patch layer (ACDC, EAP, head pruning)")
    _check_supported(loaded)
    dims = loaded.dims
    layers = tuple(_layer_weights(loaded, layer) for layer in range(dims.n_layers))
    if kv_edges == "query_head" and dims.n_kv_heads != dims.n_heads:
        layers = tuple(_per_query_head(lw, dims.n_heads // dims.n_kv_heads) for lw in layers)
        dims = replace(dims, n_kv_heads=dims.n_heads)
    rotary = None
    if adapter.pos_embed is None:
        rotary = getattr(getattr(model, "base_model", model), "rotary_emb", None)
        if not isinstance(rotary, nn.Module):
            raise ModelError(
                f"{type(model).__name__}: no learned positions and no `rotary_emb` module on "
                "the base model; the patch layer cannot build position encodings for it"
            )
    return ModelWeights(
        dims=dims,
        layers=layers,
        embed=adapter.root(model, "embed"),
        pos_embed=adapter.root(model, "pos_embed") if adapter.pos_embed else None,
        rotary=rotary,
        final_norm=adapter.root(model, "final_norm"),
        unembed=adapter.root(model, "unembed"),
    )


def _per_query_head(lw: LayerWeights, rep: int) -> LayerWeights:
    """A block's weights with each KV head's K/V projection repeated for the ``rep`` query
    heads it serves (HF's ``repeat_kv`` pairing: query head h reads KV head h // rep)."""

    def each(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.repeat_interleave(rep, dim=0)

    return replace(lw, wk=each(lw.wk), bk=each(lw.bk), wv=each(lw.wv), bv=each(lw.bv))


def _check_supported(loaded: LoadedModel) -> None:
    adapter, config = loaded.adapter, loaded.model.config
    assert adapter is not None  # read_weights checked
    reasons = []
    if adapter.has("ln_attn_post") or adapter.has("ln_mlp_post"):
        reasons.append("norms on the attention/MLP outputs make head outputs non-additive")
    if adapter.has("q_norm") or adapter.has("k_norm"):
        reasons.append("per-head q/k norms are not implemented")
    if adapter.logit_softcap(config) or adapter.attn_logit_softcap(config):
        reasons.append("logit soft-capping is not implemented")
    kinds = set(getattr(config, "layer_types", None) or ())
    if kinds - {"full_attention", "sliding_attention"}:
        reasons.append(f"attention layer types {sorted(kinds)} are not implemented")
    if reasons:
        arch = type(loaded.model).__name__
        raise ModelError(
            f"the ACDC patch layer cannot reproduce {arch} exactly: {'; '.join(reasons)}. "
            "Supported: Llama, Mistral, Qwen2, Gemma (1) and GPT-2; use one of those for "
            "ACDC/EAP/head pruning"
        )


def _layer_weights(loaded: LoadedModel, layer: int) -> LayerWeights:
    model, adapter, dims = loaded.model, loaded.adapter, loaded.dims
    assert adapter is not None  # read_weights checked
    h, g, hd, d = dims.n_heads, dims.n_kv_heads, dims.head_dim, dims.d_model

    def w(site: str, n: int) -> tuple[Tensor, Tensor | None]:
        weight = adapter.proj_weight(model, layer, site)
        bias = adapter.proj_bias(model, layer, site)
        if weight.shape != (n * hd, d):
            raise ModelError(
                f"layer {layer} {site}-projection has shape {tuple(weight.shape)}, "
                f"expected {(n * hd, d)} from the config"
            )
        return weight.reshape(n, hd, d), (bias.reshape(n, hd) if bias is not None else None)

    wq, bq = w("q", h)
    wk, bk = w("k", g)
    wv, bv = w("v", g)
    wo = adapter.proj_weight(model, layer, "o")
    if wo.shape != (d, h * hd):
        raise ModelError(f"layer {layer} o-projection has shape {tuple(wo.shape)}")
    attn = adapter.module(model, layer, "attn")
    scaling = getattr(attn, "scaling", None)
    if not isinstance(scaling, int | float):
        raise ModelError(
            f"{type(attn).__name__} has no numeric `scaling`; cannot reproduce its scores"
        )
    return LayerWeights(
        ln_attn=adapter.module(model, layer, "ln_attn"),
        ln_mlp=adapter.module(model, layer, "ln_mlp"),
        mlp=adapter.module(model, layer, "mlp"),
        wq=wq,
        bq=bq,
        wk=wk,
        bk=bk,
        wv=wv,
        bv=bv,
        wo=wo.reshape(d, h, hd).permute(1, 0, 2),
        bo=adapter.proj_bias(model, layer, "o"),
        scaling=float(scaling),
        window=_window(model.config, layer),
    )


def _window(config: Any, layer: int) -> int | None:
    size = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not size or (types is not None and types[layer] != "sliding_attention"):
        return None
    return int(size)
