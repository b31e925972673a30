"""Adapters against tiny random models of every registered architecture, loaded from disk."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from circuitlab.errors import ModelError
from circuitlab.models import ADAPTERS, LoadedModel, get_adapter
from circuitlab.models.adapters.base import HOOK_NAMES, LAYER_SITES, MODEL_SITES, Adapter
from tiny_models import CASES, Case, build_tiny


def test_every_registered_architecture_is_tested() -> None:
    assert set(CASES) == set(ADAPTERS)


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param))


def _case(lm: LoadedModel) -> Case:
    return CASES[type(lm.model).__name__]


def _ids() -> Tensor:
    return torch.tensor([[3, 7, 11, 5, 2, 9], [4, 4, 60, 12, 1, 8]])


def _logits(lm: LoadedModel) -> Tensor:
    with torch.no_grad():
        return lm.model(_ids()).logits


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@contextmanager
def _record_io(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    seen: dict[str, Tensor] = {}

    def hook(_m: nn.Module, args: tuple[Tensor, ...], out: Any) -> None:
        seen["in"], seen["out"] = args[0].detach(), out.detach()

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def test_dims(loaded: LoadedModel) -> None:
    d = loaded.dims
    assert (d.n_layers, d.d_model, d.d_mlp, d.n_heads, d.vocab_size) == (2, 32, 64, 4, 64)
    assert d.n_kv_heads == _case(loaded).n_kv_heads
    assert d.head_dim == 8
    assert d.n_neurons == 128


def test_every_declared_path_resolves(loaded: LoadedModel) -> None:
    ad, model = loaded.adapter, loaded.model
    for site in MODEL_SITES:
        if ad.has(site):
            assert isinstance(ad.root(model, site), nn.Module)
    assert len(ad.layers(model)) == 2
    for site in LAYER_SITES:
        if ad.has(site):
            assert isinstance(ad.module(model, 1, site), nn.Module), site
        else:
            with pytest.raises(ModelError, match=site):
                ad.module(model, 1, site)
    assert ad.act_name(model.config)
    assert 0 < ad.norm_eps(model.config) < 1e-3
    softcap = ad.logit_softcap(model.config)
    assert (softcap is not None) == (type(model).__name__ == "Gemma2ForCausalLM")


def test_projection_shapes_and_fused_split(loaded: LoadedModel) -> None:
    ad, model, d = loaded.adapter, loaded.model, loaded.dims
    expected = {
        "q": (d.n_heads * d.head_dim, d.d_model),
        "k": (d.n_kv_heads * d.head_dim, d.d_model),
        "v": (d.n_kv_heads * d.head_dim, d.d_model),
        "o": (d.d_model, d.n_heads * d.head_dim),
        "up": (d.d_mlp, d.d_model),
        "down": (d.d_model, d.d_mlp),
    }
    if ad.mlp_kind == "gated":
        expected["gate"] = (d.d_mlp, d.d_model)
    for site, shape in expected.items():
        assert tuple(ad.proj_weight(model, 0, site).shape) == shape, site
    # q/k/v weights (split or not) reproduce the HF projection outputs
    x = torch.randn(2, 3, d.d_model)
    fused = ad.module(model, 0, "qkv")(x) if ad.qkv else None
    start = 0
    for site in ("q", "k", "v"):
        w, b = ad.proj_weight(model, 0, site), ad.proj_bias(model, 0, site)
        ours = x @ w.T + (b if b is not None else 0)
        if fused is None:
            ref = ad.module(model, 0, site)(x)
        else:
            ref = fused[..., start : start + w.shape[0]]
            start += w.shape[0]
        torch.testing.assert_close(ours, ref)


def test_down_proj_weight_orientation(loaded: LoadedModel) -> None:
    ad, model, case = loaded.adapter, loaded.model, _case(loaded)
    for layer in range(2):
        w = ad.down_proj_weight(model, layer)
        assert tuple(w.shape) == (32, 64)
        assert torch.equal(w, case.down_weight(ad.layer(model, layer)))
        # column i is neuron i's output direction: the MLP output is acts @ W.T (+ bias)
        acts = torch.randn(2, 3, 64)
        b = ad.proj_bias(model, layer, "down")
        torch.testing.assert_close(
            ad.down_proj(model, layer)(acts), acts @ w.T + (b if b is not None else 0)
        )


def test_captured_neurons_match_manual_recomputation(loaded: LoadedModel) -> None:
    ad, model, case = loaded.adapter, loaded.model, _case(loaded)
    with (
        _record_io(ad.module(model, 1, "mlp")) as mlp_io,
        _record_io(ad.module(model, 1, "ln_mlp")) as norm_io,
        ad.capture_neurons(model, layers=[1]) as acts,
    ):
        _logits(loaded)
    layer = ad.layer(model, 1)
    # the adapter's ln_mlp is the norm feeding the MLP, under its HF name
    assert ad.module(model, 1, "ln_mlp") is getattr(layer, case.mlp_norm)
    torch.testing.assert_close(norm_io["out"], mlp_io["in"])
    assert set(acts) == {1}
    assert acts[1].shape == (2, 6, 64)
    with torch.no_grad():
        torch.testing.assert_close(acts[1], case.neurons(layer, mlp_io["in"]))


def test_capture_all_layers_keeps_graph_when_asked(loaded: LoadedModel) -> None:
    ad, model = loaded.adapter, loaded.model
    with ad.capture_neurons(model, detach=False) as acts:
        model(_ids())
    assert sorted(acts) == [0, 1]
    assert all(a.requires_grad for a in acts.values())


def test_edit_neurons(loaded: LoadedModel) -> None:
    ad, model = loaded.adapter, loaded.model
    base = _logits(loaded)
    with ad.edit_neurons(model, lambda _layer, x: x):
        same = _logits(loaded)
    assert torch.equal(same, base)
    with ad.edit_neurons(model, lambda _layer, x: torch.zeros_like(x)):
        zeroed = _logits(loaded)
    assert not torch.allclose(zeroed, base)
    seen: list[int] = []

    def last_only(layer: int, x: Tensor) -> Tensor:
        seen.append(layer)
        return x * 0

    with ad.edit_neurons(model, last_only, layers=[1]), ad.capture_neurons(model) as acts:
        _logits(loaded)
    assert seen == [1]
    # pre-hooks run in registration order: the capture sees layer 1's edited input
    assert acts[0].abs().sum() > 0
    assert not acts[1].any()
    assert torch.equal(_logits(loaded), base)


def test_hooks_removed_on_exit_and_on_error(loaded: LoadedModel) -> None:
    ad, model = loaded.adapter, loaded.model
    before = _hook_count(model)
    with ad.capture_neurons(model), ad.edit_neurons(model, lambda _l, x: x):
        assert _hook_count(model) == before + 4
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"), ad.capture_neurons(model):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), ad.edit_neurons(model, lambda _l, x: x):
        raise RuntimeError("boom")
    # an edit returning the wrong shape fails clearly and still cleans up
    with (
        pytest.raises(ModelError, match="shape"),
        ad.edit_neurons(model, lambda _l, x: x[..., :3]),
    ):
        _logits(loaded)
    for layer in range(2):
        assert not ad.down_proj(model, layer)._forward_pre_hooks
    assert _hook_count(model) == before
    assert torch.equal(_logits(loaded), _logits(loaded))


def test_bad_layer_index(loaded: LoadedModel) -> None:
    ad, model = loaded.adapter, loaded.model
    before = _hook_count(model)
    with pytest.raises(IndexError), ad.capture_neurons(model, layers=[2]):
        pass
    assert _hook_count(model) == before


def test_get_adapter_accepts_model_config_and_name(loaded: LoadedModel) -> None:
    name = type(loaded.model).__name__
    assert get_adapter(loaded.model) is loaded.adapter
    assert get_adapter(loaded.model.config) is loaded.adapter
    assert get_adapter(name) is loaded.adapter


def test_unsupported_architecture_lists_supported() -> None:
    with pytest.raises(ModelError) as err:
        get_adapter("OPTForCausalLM")
    msg = str(err.value)
    assert "unsupported architecture 'OPTForCausalLM'" in msg
    assert "supported: " + ", ".join(sorted(ADAPTERS)) in msg


def test_hook_names() -> None:
    assert Adapter.hook_name("neurons", 3) == "blocks.3.mlp.hook_post"
    assert Adapter.hook_name("resid_pre", 0) == "blocks.0.hook_resid_pre"
    assert Adapter.hook_name("resid_post", 1) == "blocks.1.hook_resid_post"
    assert Adapter.hook_name("mlp_out", 2) == "blocks.2.hook_mlp_out"
    assert Adapter.hook_name("attn_z", 2) == "blocks.2.attn.hook_z"
    assert all("{layer}" in v for v in HOOK_NAMES.values())
    with pytest.raises(KeyError, match="unknown hook site"):
        Adapter.hook_name("resid", 0)


def test_adapter_declaration_is_checked() -> None:
    llama = ADAPTERS["LlamaForCausalLM"]
    from dataclasses import replace

    with pytest.raises(ValueError, match="fused qkv"):
        replace(llama, qkv="self_attn.qkv")
    with pytest.raises(ValueError, match="gate"):
        replace(llama, mlp_kind="plain")
    with pytest.raises(RuntimeError, match="registered twice"):
        from circuitlab.models.adapters.base import register

        register(llama, ["LlamaForCausalLM"])
