"""CAA: control vectors against a per-prompt reference, add_vector placement, the artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from circuitlab.errors import ArtifactError
from circuitlab.models import LoadedModel
from circuitlab.steering import (
    SteeringError,
    activation_weighted_vectors,
    add_vector,
    control_vectors,
    encode_prompts,
    generate,
    last_logits,
    last_token_activations,
    load_vectors,
    neuron_differences,
    prompt_logits,
    save_vectors,
)
from reference.steering import PROMPTS, hf_down_weight, hf_layers, mean_difference

POS = [*PROMPTS[:2], "w50 w51"]
NEG = [*PROMPTS[2:], "w12 w13 w14 w15 w16"]


@pytest.mark.parametrize("site", ["resid", "mlp_out"])
def test_control_vectors_match_per_prompt_reference(lm: LoadedModel, site: str) -> None:
    got = control_vectors(lm, POS, NEG, site=site, batch_size=2)  # type: ignore[arg-type]
    ref = mean_difference(lm, POS, NEG, site)
    assert got.shape == (lm.dims.n_layers, lm.dims.d_model)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)
    assert got.abs().max() > 1e-3


def test_neuron_differences_and_activation_weighted(lm: LoadedModel) -> None:
    diffs = neuron_differences(lm, POS, NEG, batch_size=3)
    ref = mean_difference(lm, POS, NEG, "neurons")
    assert diffs.shape == (lm.dims.n_layers, lm.dims.d_mlp)
    assert torch.allclose(diffs, ref, atol=1e-5, rtol=1e-4)
    aw = activation_weighted_vectors(lm, diffs)
    layers = hf_layers(lm)
    for ly in range(lm.dims.n_layers):
        w = hf_down_weight(layers[ly]).detach().float()
        assert torch.allclose(aw[ly], w @ diffs[ly], atol=1e-5)
    with pytest.raises(SteeringError, match="n_layers, d_mlp"):
        activation_weighted_vectors(lm, diffs[:1])


def _resid(lm: LoadedModel, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    got = {}

    def keep(_l: int, hs: torch.Tensor) -> torch.Tensor:
        got["hs"] = hs.detach().clone()
        return hs

    with torch.no_grad(), lm.adapter.edit_residual(lm.model, keep, [layer]):
        lm.model(input_ids=ids, attention_mask=mask)
    return got["hs"]


@pytest.mark.parametrize("positions", ["last", "all"])
def test_add_vector_adds_exactly_the_vector_at_the_right_place(
    lm: LoadedModel, positions: str
) -> None:
    layer = lm.dims.n_layers - 1  # the layer's own output is read after the addition
    ids, mask, last = encode_prompts(lm.tokenizer, PROMPTS)
    vec = torch.randn(lm.dims.d_model, generator=torch.Generator().manual_seed(0))
    n_hooks = sum(len(m._forward_hooks) for m in lm.model.modules())
    base = _resid(lm, layer, ids, mask)
    with add_vector(lm, layer, vec, 2.5, positions=positions, last=last):  # type: ignore[arg-type]
        steered = _resid(lm, layer, ids, mask)
        logits = last_logits(lm, ids, mask, last)
    diff = steered - base
    where = torch.arange(ids.shape[1])[None, :] >= last[:, None]
    if positions == "all":
        where = torch.ones_like(where)
    assert torch.allclose(diff[where], (2.5 * vec).expand(int(where.sum()), -1), atol=1e-5)
    assert torch.equal(diff[~where], torch.zeros_like(diff[~where]))
    assert not torch.allclose(logits, last_logits(lm, ids, mask, last), atol=1e-4)
    assert sum(len(m._forward_hooks) for m in lm.model.modules()) == n_hooks


def test_add_vector_earlier_layer_uses_runner_positions(llama: LoadedModel) -> None:
    """Without an explicit `last`, the runners' per-batch last index is used (batched ==
    per-prompt), multiplier 0 is a no-op, and generation is steered."""
    vec = control_vectors(llama, POS, NEG)[0] * 20
    before = prompt_logits(llama, PROMPTS)
    with add_vector(llama, 0, vec, 0.0):
        assert torch.equal(prompt_logits(llama, PROMPTS), before)
    with add_vector(llama, 0, vec, 1.0):
        batched = prompt_logits(llama, PROMPTS, batch_size=4)
        single = torch.cat([prompt_logits(llama, [p]) for p in PROMPTS])
        gen = generate(llama, PROMPTS, max_new_tokens=3)
        gen_single = [generate(llama, [p], max_new_tokens=3)[0] for p in PROMPTS]
    assert torch.allclose(batched, single, atol=1e-5)
    assert not torch.allclose(batched, before, atol=1e-3)
    assert gen == gen_single
    assert gen != generate(llama, PROMPTS, max_new_tokens=3)


def test_add_vector_errors(llama: LoadedModel) -> None:
    vec = torch.zeros(llama.dims.d_model)
    with pytest.raises(SteeringError, match="outside the model"), add_vector(llama, 2, vec, 1.0):
        pass
    with pytest.raises(SteeringError, match="outside the model"), add_vector(llama, -1, vec, 1.0):
        pass
    with pytest.raises(SteeringError, match="shape"), add_vector(llama, 0, vec[:3], 1.0):
        pass
    with pytest.raises(SteeringError, match="multiplier"), add_vector(llama, 0, vec, "x"):  # type: ignore[arg-type]
        pass
    with pytest.raises(SteeringError, match="positive and negative"):
        control_vectors(llama, POS, [])


def test_vectors_round_trip(tmp_path: Path) -> None:
    vecs = {"resid": torch.randn(2, 8), "neuron_diff": torch.randn(2, 16)}
    path = save_vectors(tmp_path / "v.safetensors", vecs, {"model": "tiny", "n_pos": "3"})
    got, meta = load_vectors(path)
    assert set(got) == set(vecs) and all(torch.equal(got[k], vecs[k]) for k in vecs)
    assert meta == {"model": "tiny", "n_pos": "3"}
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]
    (tmp_path / "bad.safetensors").write_text("not a tensor file")
    with pytest.raises(ArtifactError, match="safetensors"):
        load_vectors(tmp_path / "bad.safetensors")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_vectors(tmp_path / "missing.safetensors")
    with pytest.raises(SteeringError, match="strings"):
        save_vectors(tmp_path / "m.safetensors", vecs, {"n": 3})  # type: ignore[dict-item]
    assert not (tmp_path / "m.safetensors").exists()


def test_saved_vectors_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    """safetensors writes metadata from a Rust hash map (a new order in every process): the
    saved file sorts it, so the same vectors give the same bytes (DVC and the rerun checks
    see no change)."""
    import random

    from circuitlab.steering.caa import load_vectors, save_vectors

    vectors = {"resid": torch.arange(12.0).reshape(3, 4), "mlp_out": torch.ones(3, 4)}
    meta = {f"key{i}": f"value {i} ‖" for i in range(12)}
    files = []
    for i in range(5):
        items = list(meta.items())
        random.Random(i).shuffle(items)
        files.append(
            save_vectors(tmp_path / f"v{i}.safetensors", vectors, dict(items)).read_bytes()
        )
    assert len(set(files)) == 1
    tensors, read_meta = load_vectors(tmp_path / "v0.safetensors")
    assert read_meta == meta and set(tensors) == set(vectors)
    assert all(torch.equal(tensors[k], vectors[k]) for k in vectors)


class HostCopies(TorchFunctionMode):
    """Records the shape of every tensor the stage (not the model's own forward) copies to the
    host (`.cpu()`, `.to("cpu")`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []
        self.recording = True
        self.model = model

    def __enter__(self) -> HostCopies:
        self.hooks = [
            self.model.register_forward_pre_hook(lambda *_: setattr(self, "recording", False)),
            self.model.register_forward_hook(lambda *_: setattr(self, "recording", True)),
        ]
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        for h in self.hooks:
            h.remove()
        super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        to_host = func is torch.Tensor.cpu or (
            func is torch.Tensor.to
            and any(str(a) == "cpu" for a in (*args[1:], kwargs.get("device")))
        )
        if to_host and self.recording:
            self.shapes.append(tuple(args[0].shape))
        return func(*args, **kwargs)


@pytest.mark.parametrize("site", ["resid", "mlp_out", "neurons"])
def test_last_token_activations_index_before_the_host_copy(lm: LoadedModel, site: str) -> None:
    """Only each prompt's last token reaches the host (`[B, width]` per layer), never the
    whole `[B, S, width]` activations: on a GPU those are the batch's full hidden states.
    (The prompts' `[B, S]` ids and `[B]` last indices are copied towards the model.)"""
    with HostCopies(lm.model) as copies:
        got = last_token_activations(lm, [*POS, *NEG], site, batch_size=4)  # type: ignore[arg-type]
    widths = (lm.dims.d_model, lm.dims.d_mlp)
    assert any(len(s) == 2 and s[1] in widths for s in copies.shapes), copies.shapes  # [B, width]
    assert all(len(s) <= 2 for s in copies.shapes), copies.shapes
    assert got.dtype == torch.float32 and got.shape[0] == len(POS) + len(NEG)
