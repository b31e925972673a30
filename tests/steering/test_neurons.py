"""Neuron steering: hooks, no-op and ablation semantics, positions, batching, generation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models import LoadedModel
from circuitlab.steering import (
    NeuronSet,
    SteeringError,
    encode_prompts,
    generate,
    last_logits,
    next_token_probs,
    parse_multipliers,
    prompt_logits,
    steer_neurons,
    top_predictions,
)
from reference.steering import PROMPTS, zero_neurons

TOKENS = [" w5", "w6", "w40"]


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _many(lm: LoadedModel, per_layer: int = 24) -> NeuronSet:
    return NeuronSet.from_pairs(
        (ly, n) for ly in range(lm.dims.n_layers) for n in range(0, 2 * per_layer, 2)
    )


def _circuit(lm: LoadedModel) -> NeuronSet:
    keys = {(0, -1, 3): 1.0, (0, -2, 5): 1.0, (1, -1, 7): 1.0, (1, -3, 3): 1.0, (0, -1, 9): 1.0}
    c = NeuronCircuit(keys, "tiny", "t", "lrp", n_layers=lm.dims.n_layers, d_mlp=lm.dims.d_mlp)
    return NeuronSet.from_circuit(c)


def test_neuron_set_views(llama: LoadedModel) -> None:
    ns = _circuit(llama)
    assert len(ns) == 5 and ns.has_positions
    assert ns.per_layer() == {0: [3, 5, 9], 1: [3, 7]}
    assert ns.per_layer_positions()[1] == [(-3, 3), (-1, 7)]
    assert ns.pairs() == [(0, 3), (0, 5), (0, 9), (1, 3), (1, 7)]
    pairs = NeuronSet.from_pairs([(1, 4), (0, 2), (1, 4)])
    assert len(pairs) == 2 and not pairs.has_positions
    with pytest.raises(SteeringError, match="no positions"):
        pairs.per_layer_positions()


def test_random_matched_keeps_layer_position_counts(llama: LoadedModel) -> None:
    ns = _circuit(llama)
    r = ns.random_matched(llama.dims, seed=3)
    assert sorted((ly, p) for ly, p, _ in r.keys) == sorted((ly, p) for ly, p, _ in ns.keys)
    assert not set(r.pairs()) & set(ns.pairs())
    assert r == ns.random_matched(llama.dims, seed=3)
    assert r != ns.random_matched(llama.dims, seed=4)


@pytest.mark.parametrize(
    "keys, match",
    [
        ([], "empty"),
        ([(2, 0)], "layers"),
        ([(0, 64)], "outside 0..63"),
        ([(-1, 0)], "layers"),
    ],
)
def test_validate_errors(llama: LoadedModel, keys: list[tuple[int, int]], match: str) -> None:
    n_hooks = _hooks(llama.model)
    with (
        pytest.raises(SteeringError, match=match),
        steer_neurons(llama, NeuronSet.from_pairs(keys), 0.0),
    ):
        pass
    assert _hooks(llama.model) == n_hooks


@pytest.mark.parametrize("bad", ["2", None, float("nan"), float("inf"), True])
def test_bad_multiplier(llama: LoadedModel, bad: object) -> None:
    with (
        pytest.raises(SteeringError, match="multiplier"),
        steer_neurons(
            llama,
            _many(llama),
            bad,  # type: ignore[arg-type]
        ),
    ):
        pass
    with pytest.raises(SteeringError, match="not a number"):
        parse_multipliers("0, 1, two")
    assert parse_multipliers("0, 0.5 4") == [0.0, 0.5, 4.0]


def test_hooks_removed_and_model_unchanged(lm: LoadedModel) -> None:
    before = prompt_logits(lm, PROMPTS)
    params = {k: v.clone() for k, v in lm.model.state_dict().items()}
    n_hooks = _hooks(lm.model)  # HF may hold hooks of its own
    with steer_neurons(lm, _many(lm), 3.0):
        assert _hooks(lm.model) > n_hooks
        steered = prompt_logits(lm, PROMPTS)
    assert _hooks(lm.model) == n_hooks
    assert not torch.allclose(steered, before, atol=1e-4)  # the intervention did something
    with pytest.raises(RuntimeError, match="boom"), steer_neurons(lm, _many(lm), 0.0):
        raise RuntimeError("boom")
    assert _hooks(lm.model) == n_hooks
    assert torch.equal(prompt_logits(lm, PROMPTS), before)
    assert all(torch.equal(v, params[k]) for k, v in lm.model.state_dict().items())


def test_multiplier_one_is_bit_identical(lm: LoadedModel) -> None:
    before = prompt_logits(lm, PROMPTS)
    for positions in ("all", "circuit"):
        ns = _circuit(lm) if positions == "circuit" else _many(lm)
        with steer_neurons(lm, ns, 1.0, positions=positions):  # type: ignore[arg-type]
            assert torch.equal(prompt_logits(lm, PROMPTS), before)


def test_multiplier_zero_equals_hand_zeroed(lm: LoadedModel) -> None:
    ns = _many(lm)
    before = prompt_logits(lm, PROMPTS)
    with zero_neurons(lm, ns.pairs()):
        ref = prompt_logits(lm, PROMPTS)
    with steer_neurons(lm, ns, 0.0):
        got = prompt_logits(lm, PROMPTS)
    assert torch.equal(got, ref)
    assert not torch.allclose(got, before, atol=1e-4)


def test_circuit_positions_touch_only_those_positions(lm: LoadedModel) -> None:
    ns = _circuit(lm)
    ids, mask, last = encode_prompts(lm.tokenizer, PROMPTS)
    ad = lm.adapter
    with torch.no_grad(), ad.capture_neurons(lm.model, [0]) as plain:
        lm.model(input_ids=ids, attention_mask=mask)
        base = plain[0].clone()
    steer = steer_neurons(lm, ns, 5.0, positions="circuit", last=last)
    # the capture hook is registered after the edit, so it sees the edited activations
    with torch.no_grad(), steer, ad.capture_neurons(lm.model, [0]) as steered:
        lm.model(input_ids=ids, attention_mask=mask)
    expected = torch.zeros_like(base, dtype=torch.bool)
    for b, lst in enumerate(last.tolist()):
        for off, n in ns.per_layer_positions()[0]:
            if lst + 1 + off >= 0:
                expected[b, lst + 1 + off, n] = True
    changed = steered[0] != base
    assert torch.equal(changed, expected & (base != 0))
    assert torch.allclose(steered[0][expected], 5.0 * base[expected])


def test_batched_equals_per_prompt(lm: LoadedModel) -> None:
    for positions, ns in (("all", _many(lm)), ("circuit", _circuit(lm))):
        with steer_neurons(lm, ns, 0.0, positions=positions):  # type: ignore[arg-type]
            batched = next_token_probs(lm, PROMPTS, TOKENS, batch_size=3)
            single = torch.cat([next_token_probs(lm, [p], TOKENS) for p in PROMPTS])
            gen_b = generate(lm, PROMPTS, max_new_tokens=4)
            gen_s = [generate(lm, [p], max_new_tokens=4)[0] for p in PROMPTS]
        assert torch.allclose(batched, single, atol=1e-6, rtol=1e-5)
        assert gen_b == gen_s
    assert batched.shape == (len(PROMPTS), len(TOKENS))


def test_generate_is_greedy_and_steered(llama: LoadedModel) -> None:
    """Reference: one step at a time, each the argmax of the grown unpadded sequence."""
    prompt = PROMPTS[0]
    ns = _many(llama, per_layer=32)
    plain = generate(llama, [prompt], max_new_tokens=5)[0]
    ids, _, last = encode_prompts(llama.tokenizer, [prompt])
    with steer_neurons(llama, ns, 0.0):
        got = generate(llama, [prompt], max_new_tokens=5)[0]
        seq = ids
        for _ in range(5):
            logits = last_logits(llama, seq, torch.ones_like(seq), torch.tensor([seq.shape[1] - 1]))
            seq = torch.cat([seq, logits.argmax(-1)[:, None]], dim=1)
    assert got == llama.tokenizer.decode(seq[0, int(last[0]) + 1 :], skip_special_tokens=True)
    assert got != plain
    assert len(got.split()) == 5


def test_next_token_probs_and_top(llama: LoadedModel) -> None:
    probs = next_token_probs(llama, PROMPTS, TOKENS)
    full = prompt_logits(llama, PROMPTS).softmax(-1)
    ids = [llama.tokenizer.convert_tokens_to_ids(t.strip()) for t in TOKENS]
    assert torch.allclose(probs, full[:, ids])
    top = top_predictions(llama, PROMPTS[0], k=4)
    assert len(top) == 4 and top[0][1] >= top[-1][1]
    assert top[0][1] == pytest.approx(float(full[0].max()))
    with pytest.raises(SteeringError, match="single tokens"):
        next_token_probs(llama, PROMPTS, ["w5 w6"])
    with pytest.raises(SteeringError, match="single tokens"):
        next_token_probs(llama, PROMPTS, [""])
