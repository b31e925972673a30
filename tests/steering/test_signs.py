"""Sign-aware steering (issue 26 §3) on a case built so its answer is known.

The support score of the `gradient` source is the derivative of the mean metric with respect to
scaling the neuron (d/dm metric(m · a) at m = 1 is gradient × activation), so it is checked
against a finite difference of real steering. Then a planted circuit: a few true supporters and
many opposers, all stored with *positive* relevance (the trap LRP's sign can set). Amplifying
the whole circuit lowers the metric; amplifying the gradient's supporters raises it."""

from __future__ import annotations

import pytest
import torch
from steering_data import task_rows

from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models import LoadedModel
from circuitlab.prompts import encode_rows
from circuitlab.steering import NeuronSet, last_logits, steer_neurons
from circuitlab.steering.settings import SteeringConfig
from circuitlab.steering.signs import (
    sign_agreement,
    split_by_sign,
    stored_scores,
    support_scores,
)
from circuitlab.steering.stages import neuron_steering
from steering.test_stages import CFG


def _rows(split: str):  # type: ignore[no-untyped-def]
    return [r for r in task_rows(24) if r.split == split]


def _mean_logit_diff(lm: LoadedModel, rows, ns: NeuronSet | None = None, m: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    batch = encode_rows(rows, lm.tokenizer)
    idx = torch.arange(len(rows))
    with torch.no_grad():
        if ns is None:
            logits = last_logits(lm, batch.input_ids, batch.attention_mask, batch.last)
        else:
            with steer_neurons(lm, ns, m, positions="circuit"):
                logits = last_logits(lm, batch.input_ids, batch.attention_mask, batch.last)
    return float((logits[idx, batch.target] - logits[idx, batch.counterfactual]).double().mean())


def _grid(lm: LoadedModel, rows) -> dict:  # type: ignore[no-untyped-def]
    """Every last-position neuron's gradient support, via a circuit holding all of them."""
    keys = {(ly, -1, n): 1.0 for ly in range(lm.dims.n_layers) for n in range(lm.dims.d_mlp)}
    every = NeuronCircuit(keys, "tiny", "capitals", "lrp", n_layers=lm.dims.n_layers,
                          d_mlp=lm.dims.d_mlp)  # fmt: skip
    return support_scores(lm, every, rows, "gradient")


def test_the_gradient_support_is_the_derivative_of_real_steering(llama: LoadedModel) -> None:
    train = _rows("train")
    scores = _grid(llama, train)
    top = sorted(scores, key=lambda k: -abs(scores[k]))[:4]
    eps = 1e-2
    for key in top:
        ns = NeuronSet((key,))
        up = _mean_logit_diff(llama, train, ns, 1 + eps)
        down = _mean_logit_diff(llama, train, ns, 1 - eps)
        assert (up - down) / (2 * eps) == pytest.approx(scores[key], rel=0.05, abs=1e-4), key


def test_amplifying_supporters_raises_what_amplifying_the_whole_circuit_lowers(
    llama: LoadedModel,
) -> None:
    # evaluated on the prompts the support was measured on: the known answer is about them
    train = test = _rows("train")
    scores = _grid(llama, train)
    ranked = sorted(scores, key=lambda k: scores[k])
    opposers, supporters = ranked[:12], ranked[-3:]  # the opposers outweigh the supporters
    assert sum(scores[k] for k in opposers) + sum(scores[k] for k in supporters) < 0
    planted = NeuronCircuit({k: 1.0 for k in opposers + supporters}, "tiny", "capitals", "lrp",
                            n_layers=llama.dims.n_layers, d_mlp=llama.dims.d_mlp)  # fmt: skip
    found = support_scores(llama, planted, train, "gradient")
    sup, opp = split_by_sign(found)
    assert set(sup.keys) == set(supporters) and set(opp.keys) == set(opposers)
    # the stored (relevance) sign says all fifteen support
    assert sign_agreement(stored_scores(planted), found) == pytest.approx(3 / 15)
    assert split_by_sign(support_scores(llama, planted, train, "relevance"))[1].keys == ()

    base = _mean_logit_diff(llama, test)
    everything = _mean_logit_diff(llama, test, NeuronSet.from_circuit(planted), 1.5)
    only_sup = _mean_logit_diff(llama, test, sup, 1.5)
    assert everything < base < only_sup

    # through the stage: the amplify arm scales the three supporters, suppression all fifteen
    cfg = CFG.model_copy(update={"multipliers": [0.0, 1.0, 1.5], "positions": "circuit"})
    rep = neuron_steering(llama, planted, test, {}, cfg, name="capitals", is_behaviour=False,
                          train=train)  # fmt: skip
    assert rep["signs"]["n_steered"] == {"suppress": 15, "amplify": 3}
    amp = rep["metrics"]["logit_diff"]["m=1.5"]["steered_effect"]["mean"]
    assert amp == pytest.approx(only_sup - base, abs=1e-5)
    seed = cfg.model_copy(update={"amplify": "all"})
    old = neuron_steering(llama, planted, test, {}, seed, name="capitals", is_behaviour=False)
    assert old["metrics"]["logit_diff"]["m=1.5"]["steered_effect"]["mean"] < 0 < amp


def test_supporters_need_rows_and_a_circuit_without_one_amplifies_nothing(
    llama: LoadedModel,
) -> None:
    from circuitlab.steering import SteeringError

    test, train = _rows("test"), _rows("train")
    scores = _grid(llama, train)
    opposer = min(scores, key=lambda k: scores[k])
    assert scores[opposer] < 0
    circuit = NeuronCircuit({opposer: 1.0}, "tiny", "capitals", "lrp", n_layers=2,
                            d_mlp=llama.dims.d_mlp)  # fmt: skip
    with pytest.raises(SteeringError, match="needs the rows the circuit was found on"):
        neuron_steering(llama, circuit, test, {}, CFG, name="capitals", is_behaviour=False)
    # its only neuron opposes the metric: amplification scales nothing, and says so
    cfg = CFG.model_copy(update={"positions": "circuit"})
    rep = neuron_steering(llama, circuit, test, {}, cfg, name="capitals", is_behaviour=False,
                          train=train)  # fmt: skip
    assert rep["signs"]["n_steered"] == {"suppress": 1, "amplify": 0}
    amp = rep["summary"]["amplify"]
    assert amp["steered_effect"]["mean"] == 0.0 and not amp["beats_control"]
    assert SteeringConfig(amplify="all").amplify == "all"


def test_a_behaviours_support_is_for_its_own_direction(llama: LoadedModel) -> None:
    """Behaviour rows answer the behaviour (positive) or its contrast (negative): the support for
    the behaviour counts the negative rows' own metric with the opposite sign."""
    from steering_data import behaviour_rows

    rows = [r for r in behaviour_rows() if r.split == "train"]
    pos = [r for r in rows if r.meta["polarity"] == "positive"]
    neg = [r for r in rows if r.meta["polarity"] == "negative"]
    keys = {(ly, -1, n): 1.0 for ly in range(2) for n in range(8)}
    circuit = NeuronCircuit(keys, "tiny", "refusal", "lrp", n_layers=2, d_mlp=llama.dims.d_mlp)
    on_pos = support_scores(llama, circuit, pos, "gradient")
    on_neg = support_scores(llama, circuit, neg, "gradient")
    both = support_scores(llama, circuit, rows, "gradient", behaviour=True)
    for k in keys:
        expected = (len(pos) * on_pos[k] - len(neg) * on_neg[k]) / len(rows)
        assert both[k] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert support_scores(llama, circuit, pos, "gradient", behaviour=True) == pytest.approx(on_pos)


def test_the_amplification_diagnosis_finds_the_planted_reason(llama: LoadedModel) -> None:
    """`diagnose-amplification` on the planted circuit: amplifying every neuron (or the stored
    sign's supporters, which are all of them) goes below the unsteered metric, amplifying the
    gradient's supporters above it; the norm measurement is there for a task."""
    from steering_data import NEUTRAL

    from circuitlab.steering.diagnose import amplification_diagnosis

    rows = _rows("train")
    scores = _grid(llama, rows)
    ranked = sorted(scores, key=lambda k: scores[k])
    planted = NeuronCircuit({k: 1.0 for k in ranked[:12] + ranked[-3:]}, "tiny", "capitals",
                            "lrp", n_layers=llama.dims.n_layers, d_mlp=llama.dims.d_mlp)  # fmt: skip
    res = amplification_diagnosis(llama, planted, rows, rows, NEUTRAL, is_behaviour=False,
                                  multipliers=(1.5,), control_seeds=2)  # fmt: skip
    v = res["variants"]
    assert v["supporters@circuit"]["n_neurons"] == 3 and v["all"]["n_neurons"] == 15
    assert v["supporters@relevance"]["n_neurons"] == 15
    assert v["all@circuit"]["multipliers"]["m=1.5"]["effect"] < 0
    assert v["supporters@circuit"]["multipliers"]["m=1.5"]["effect"] > 0
    assert 0 < v["supporters"]["n_neurons"] <= 15  # measured over every position
    assert res["sign_agreement"] is not None
    assert set(res["norm"]) == {"m=1", "m=1.5"} and res["norm"]["m=1"]["resid_norm"] > 0


def test_support_over_every_position_is_the_derivative_of_steering_everywhere(
    llama: LoadedModel,
) -> None:
    """For steering at every position (the default), a neuron's support is gradient × activation
    summed over all positions: the derivative of scaling it everywhere."""
    train = _rows("train")
    keys = {(ly, -1, n): 1.0 for ly in range(llama.dims.n_layers) for n in range(0, 24, 3)}
    circuit = NeuronCircuit(keys, "tiny", "capitals", "lrp", n_layers=llama.dims.n_layers,
                            d_mlp=llama.dims.d_mlp)  # fmt: skip
    scores = support_scores(llama, circuit, train, "gradient", positions="all")
    assert set(scores) == {(ly, None, n) for ly, _, n in keys}
    eps = 1e-2
    for key in sorted(scores, key=lambda k: -abs(scores[k]))[:3]:
        ns = NeuronSet((key,))
        batch = encode_rows(train, llama.tokenizer)
        idx = torch.arange(len(train))
        diffs = []
        for m in (1 + eps, 1 - eps):
            with torch.no_grad(), steer_neurons(llama, ns, m, positions="all"):
                logits = last_logits(llama, batch.input_ids, batch.attention_mask, batch.last)
            diffs.append(
                float(
                    (logits[idx, batch.target] - logits[idx, batch.counterfactual]).double().mean()
                )
            )
        assert (diffs[0] - diffs[1]) / (2 * eps) == pytest.approx(scores[key], rel=0.05, abs=1e-4)
    # the stored scores summed per neuron, for the relevance source
    assert support_scores(llama, circuit, train, "relevance", positions="all") == {
        (ly, None, n): 1.0 for ly, _, n in keys
    }
