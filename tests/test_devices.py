"""Neuron stages on a model split across devices: each tensor stays on its layer's device.

Two levels. The helpers of `circuitlab.devices` are checked directly (with the `meta` device,
a second real device every torch build has, to show an op across devices raises). The stages
are then run under `tests/shards.py`'s virtual devices: layer `l` of the tiny model on device
`l + 1`, the logits on the last layer's, the prompts on device 0; an op mixing two devices
raises there as it does across GPUs. Each stage must give exactly its unsplit result; and the
code before this change (stacking layers' activations, indexing the logits with the prompts'
indices) raised in this simulation (checked by hand at the change; `test_the_simulation_*`
keeps the simulation itself honest). See `tests/shards.py` for what it does not cover.
"""

from __future__ import annotations

import pytest
import torch

from circuitlab.blacklist.detect import detect_universal_neurons
from circuitlab.devices import at_last, device_of, stack_on, to_device_of
from circuitlab.lrp.attribution import AttributionOptions, attribute_rows, last_activations
from circuitlab.lrp.faithfulness import AblationRunner, Grid
from circuitlab.models import LoadedModel
from circuitlab.prompts import encode_prompts
from circuitlab.steering.caa import last_token_activations
from circuitlab.steering.neurons import NeuronSet, last_logits, steer_neurons
from shards import shard, split_over_shards
from tiny_models import build_tiny, make_rows


def on_layer_device(layer: int) -> int:
    """Layer `l` on virtual device `l + 1`: no layer shares the prompts' device 0."""
    return layer + 1


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny("LlamaForCausalLM", tmp_path_factory.mktemp("llama"))


# ------------------------------------------------------------------------------ helpers
def test_device_of_a_tensor_a_layer_and_a_module_without_parameters() -> None:
    assert device_of(torch.zeros(2, device="meta")) == torch.device("meta")
    assert device_of(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert device_of(torch.nn.ReLU()) == torch.device("cpu")


def test_to_device_of_moves_only_when_needed() -> None:
    x = torch.arange(3)
    assert to_device_of(x, torch.zeros(1)) is x  # same device: the tensor itself, no copy
    moved = to_device_of(x, torch.nn.Linear(1, 1, device="meta"))
    assert moved.device == torch.device("meta") and moved.shape == x.shape


def test_at_last_indexes_on_the_tensors_device() -> None:
    x = torch.arange(24.0).view(2, 3, 4)
    last = torch.tensor([2, 0])
    assert torch.equal(at_last(x, last), torch.stack([x[0, 2], x[1, 0]]))
    # on another device the index follows the tensor (a cross-device index raises)
    on_meta = at_last(x.to("meta"), last)
    assert on_meta.device == torch.device("meta") and on_meta.shape == (2, 4)


def test_stack_on_gathers_layers_from_two_devices() -> None:
    layers = [torch.ones(2, 3), torch.ones(2, 3, device="meta")]
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.stack(layers, 1)  # what a split model's per-layer tensors do without the helper
    got = stack_on(layers, "meta", 1)
    assert got.device == torch.device("meta") and got.shape == (2, 2, 3)
    assert torch.equal(
        stack_on([torch.ones(2), torch.zeros(2)], "cpu"), torch.tensor([[1.0, 1], [0, 0]])
    )


# ------------------------------------------------------------------ the simulation itself
def test_the_simulation_raises_on_stacking_layers_across_devices(
    llama: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression the stages must not have: stacking per-layer activations as captured."""
    batch = encode_prompts(llama.tokenizer, ["w1 w2 w3", "w4 w5"])
    with (
        split_over_shards(llama, monkeypatch, on_layer_device) as mode,
        llama.adapter.capture_neurons(llama.model) as acts,
    ):
        llama.model(input_ids=batch[0], attention_mask=batch[1])
        with pytest.raises(RuntimeError, match="same device"):
            torch.stack([acts[layer] for layer in range(llama.dims.n_layers)], 1)
        assert shard(acts[1]) == 2 and device_of(acts[1]) == torch.device("cpu", 2)
    assert mode.mixed == ["stack"]


# ------------------------------------------------------------------------------ stages
def test_lrp_attribution_on_a_split_model(
    llama: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, opts = make_rows(6), AttributionOptions(batch_size=4, top_k_per_layer=5)
    ref = attribute_rows(llama, rows, opts, progress=False)
    ref_last = last_activations(llama, rows, 4)
    with split_over_shards(llama, monkeypatch, on_layer_device) as mode:
        got = attribute_rows(llama, rows, opts, progress=False)
        got_last = last_activations(llama, rows, 4)
    assert not mode.mixed
    assert torch.equal(got.scores, ref.scores) and torch.equal(got.metric, ref.metric)
    assert torch.equal(got_last, ref_last)


def test_lrp_faithfulness_ablation_on_a_split_model(
    llama: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_rows(6)
    runner = AblationRunner(llama, rows, Grid(3, 1), "logit_diff", batch_size=4)
    means = runner.mean_activations(rows, 4)
    cells = torch.rand(means.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    ref = (runner.metric_with(None, None), runner.metric_with(cells, means))
    with split_over_shards(llama, monkeypatch, on_layer_device) as mode:
        got_means = runner.mean_activations(rows, 4)
        got = (runner.metric_with(None, None), runner.metric_with(cells, means))
        zeroed = runner.metric_with(cells, None)
    assert not mode.mixed
    assert torch.equal(got_means, means) and got == ref
    assert zeroed != ref[0]  # the ablation did something


def test_blacklist_caa_and_steering_on_a_split_model(
    llama: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [" ".join(f"w{(3 * i + j) % 60}" for j in range(1 + i % 5)) for i in range(20)]
    ids, mask, last = encode_prompts(llama.tokenizer, prompts[:4])
    neurons = NeuronSet(((0, -1, 3), (1, -2, 5), (1, -1, 7)))

    def run() -> tuple[object, ...]:
        with steer_neurons(llama, neurons, 0.0, positions="circuit"):
            steered = last_logits(llama, ids, mask, last)
        return (
            detect_universal_neurons(llama, prompts, top_k=8, batch_size=8).neurons,
            last_token_activations(llama, prompts[:6], "neurons", batch_size=4),
            last_logits(llama, ids, mask, last),
            steered,
        )

    ref = run()
    with split_over_shards(llama, monkeypatch, on_layer_device) as mode:
        got = run()
    assert not mode.mixed
    assert got[0] == ref[0]
    for a, b in zip(got[1:], ref[1:], strict=True):
        assert torch.equal(a, b)  # type: ignore[arg-type]
    assert not torch.equal(ref[2], ref[3])  # the steering did something
