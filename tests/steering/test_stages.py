"""The steering stages on a tiny model: numbers equal a direct reference, controls and CIs
present, no-op multipliers are exact, CAA selection respects its grid and budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from steering_data import NEUTRAL, behaviour_rows, task_rows

from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models import LoadedModel
from circuitlab.prompts import encode_rows
from circuitlab.report.plots import steering_dose_response, steering_leakage
from circuitlab.steering import NeuronSet, SteeringError, add_vector, last_logits
from circuitlab.steering.settings import CaaConfig, SteeringConfig
from circuitlab.steering.stages import (
    build_caa,
    caa_steering,
    leakage_matrix,
    metrics_view,
    neuron_steering,
    split_validation,
)
from reference.steering import zero_neurons

CFG = SteeringConfig(
    multipliers=[0.0, 1.0, 3.0], neutral_prompts=NEUTRAL, bootstrap_resamples=200,
    max_new_tokens=2, text_patterns={"refusal": r"^\W*w10\b"},
)  # fmt: skip


def _circuit(lm: LoadedModel) -> NeuronCircuit:
    keys = {(ly, -1, n): 1.0 for ly in range(2) for n in range(0, 40, 2)}
    return NeuronCircuit(keys, "tiny", "capitals", "lrp", n_layers=2, d_mlp=lm.dims.d_mlp)


def _test(rows):  # type: ignore[no-untyped-def]
    return [r for r in rows if r.split == "test"]


def _train(rows):  # type: ignore[no-untyped-def]
    return [r for r in rows if r.split == "train"]


def test_neuron_steering_task_report(llama: LoadedModel, tmp_path: Path) -> None:
    rows = _test(task_rows(18))
    others = {"ioi": _test(task_rows(12, seed=1)), "capitals": rows}
    circ = _circuit(llama)
    train = _train(task_rows(18))
    rep = neuron_steering(
        llama, circ, rows, others, CFG, name="capitals", is_behaviour=False, train=train
    )
    m = rep["metrics"]
    assert rep["n_test"] == len(rows) and rep["n_neurons"] == 40
    signs = rep["signs"]  # suppression scales the whole circuit, amplification its supporters
    assert signs["signs"] == {"suppress": "all", "amplify": "supporters"}
    assert signs["n_steered"]["suppress"] == 40
    assert signs["n_steered"]["amplify"] == signs["n_supporters"] < 40
    view = metrics_view(rep)  # the metrics file: the summary, not the dose-response grid
    assert "metrics" not in view and view["summary"] == rep["summary"]
    assert set(rep["leakage"]) == {"ioi"}  # the task itself is not its own leakage
    # multiplier 1 is exactly the unsteered model; KL 0
    one = m["logit_diff"]["m=1"]
    assert one["steered"]["mean"] == m["logit_diff"]["unsteered"]["mean"]
    assert one["steered_effect"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": len(rows)}
    assert m["kl_neutral"]["m=1"]["steered"]["mean"] == 0.0
    assert m["kl_neutral"]["m=0"]["steered"]["mean"] > 0
    # ablation equals a hand-zeroed reference on the same prompts
    batch = encode_rows(rows, llama.tokenizer)
    with zero_neurons(llama, NeuronSet.from_circuit(circ).pairs()):
        logits = last_logits(llama, batch.input_ids, batch.attention_mask, batch.last)
    idx = torch.arange(len(rows))
    ref = (logits[idx, batch.target] - logits[idx, batch.counterfactual]).double().mean()
    assert m["logit_diff"]["m=0"]["steered"]["mean"] == pytest.approx(float(ref), abs=1e-5)
    for cell in m["logit_diff"]["m=0"].values():
        assert cell["lo"] <= cell["mean"] <= cell["hi"]
    assert m["logit_diff"]["m=0"]["control"]["mean"] != m["logit_diff"]["m=0"]["steered"]["mean"]
    s = rep["summary"]
    assert s["primary"] == "logit_diff" and s["suppress"]["multiplier"] == 0.0
    assert s["amplify"]["multiplier"] == 3.0 and isinstance(s["amplify"]["beats_control"], bool)
    summary = leakage_matrix([rep])
    row = summary["leakage"]["suppress"]["capitals/lrp"]
    assert row == {"ioi": m["leakage/ioi"]["m=0"]["steered_effect"]["mean"]}
    assert summary["verdicts"]["capitals/lrp"]["primary"] == "logit_diff"
    steering_leakage(summary, tmp_path / "leak.png", "tiny")
    steering_dose_response(rep, tmp_path / "dose.png", "tiny")
    assert (tmp_path / "leak.png").stat().st_size > 1000


def test_neuron_steering_behaviour_and_circuit_positions(llama: LoadedModel) -> None:
    rows = _test(behaviour_rows())
    cfg = CFG.model_copy(update={"positions": "circuit"})
    train = _train(behaviour_rows())
    rep = neuron_steering(
        llama, _circuit(llama), rows, {}, cfg, name="refusal", is_behaviour=True, train=train
    )
    m = rep["metrics"]
    for key in (
        "behaviour_rate",
        "behaviour_rate_positive",
        "behaviour_rate_negative",
        "text_rate",
    ):
        assert key in m
    assert m["behaviour_rate_positive"]["unsteered"]["n"] == len(rows) // 2
    assert rep["summary"]["primary"] == "behaviour_rate"
    assert set(rep["samples"]) == {"unsteered", "m=0", "m=1", "m=3"}
    assert rep["samples"]["m=1"] == rep["samples"]["unsteered"]


def test_bad_circuit(llama: LoadedModel) -> None:
    rows = _test(task_rows(12))
    empty = NeuronCircuit({}, "tiny", "capitals", "lrp", n_layers=2, d_mlp=64)
    with pytest.raises(SteeringError, match="empty"):
        neuron_steering(llama, empty, rows, {}, CFG, name="capitals", is_behaviour=False)
    wide = NeuronCircuit({(0, -1, 500): 1.0}, "tiny", "capitals", "lrp", n_layers=2, d_mlp=512)
    with pytest.raises(SteeringError, match="outside"):
        neuron_steering(llama, wide, rows, {}, CFG, name="capitals", is_behaviour=False)
    with pytest.raises(SteeringError, match="no test prompts"):
        neuron_steering(llama, _circuit(llama), [], {}, CFG, name="capitals", is_behaviour=False)


def test_split_validation_keeps_pairs_together() -> None:
    train = [r for r in behaviour_rows() if r.split == "train"]
    fit, val = split_validation(train, 0.25, seed=0)
    assert len(fit) + len(val) == len(train) and val
    assert not {r.meta["pair"] for r in fit} & {r.meta["pair"] for r in val}
    assert split_validation(train, 0.25, seed=0) == (fit, val)


def test_caa_build_select_and_steer(llama: LoadedModel) -> None:
    rows = behaviour_rows(16)
    train, test = [r for r in rows if r.split == "train"], _test(rows)
    caa = CaaConfig(multipliers=[0.0, 1.0, 4.0], max_kl=50.0)
    vectors, meta, sel = build_caa(llama, train, caa, CFG, name="refusal")
    assert {k: tuple(v.shape) for k, v in vectors.items()} == {
        "resid": (2, 32), "mlp_out": (2, 32), "neuron_diff": (2, 64), "activation_weighted": (2, 32)
    }  # fmt: skip
    grid = sel["grid"]
    assert set(grid) == {"layer=0", "layer=1"} and set(grid["layer=0"]) == {"m=1", "m=4"}
    best = max(
        (c["rate_rise"], -abs(float(mk[2:])), -int(lk[6:]))
        for lk, cells in grid.items() for mk, c in cells.items() if c["ok"]
    )  # fmt: skip
    assert (sel["layer"], sel["multiplier"]) == (-best[2], -best[1])
    assert meta["layer"] == str(sel["layer"]) and float(meta["multiplier"]) == sel["multiplier"]
    rep = caa_steering(llama, vectors, meta, test, {}, caa, CFG, name="refusal")
    m = rep["metrics"]
    assert m["behaviour_rate"]["m=0"]["steered"]["mean"] == m["behaviour_rate"]["unsteered"]["mean"]
    assert rep["layer"] == sel["layer"] and "chosen" in rep["summary"]
    # the steered number at the chosen multiplier equals adding the vector by hand
    batch = encode_rows(test, llama.tokenizer)
    vec = vectors["resid"][sel["layer"]]
    with add_vector(llama, sel["layer"], vec, sel["multiplier"]):
        probs = last_logits(llama, batch.input_ids, batch.attention_mask, batch.last).softmax(-1)
    tok = llama.tokenizer.convert_tokens_to_ids("w10")
    got = m["behaviour_rate"][f"m={sel['multiplier']:g}"]["steered"]["mean"]
    assert got == pytest.approx(float(probs[:, tok].double().mean()), abs=1e-6)
    # the norm-matched random control differs from the vector
    assert got != m["behaviour_rate"][f"m={sel['multiplier']:g}"]["control"]["mean"]


def test_caa_errors(llama: LoadedModel) -> None:
    rows = behaviour_rows()
    train = [r for r in rows if r.split == "train"]
    with pytest.raises(SteeringError, match="outside the model"):
        build_caa(llama, train, CaaConfig(layers=[5]), CFG, name="refusal")
    _, _meta, sel = build_caa(
        llama, train, CaaConfig(multipliers=[0, 1.0, 50.0], max_kl=1e-9), CFG, name="refusal"
    )
    kls = {
        (lk, mk): c["kl_neutral"] for lk, cells in sel["grid"].items() for mk, c in cells.items()
    }
    assert not sel["within_budget"]
    assert kls[(f"layer={sel['layer']}", f"m={sel['multiplier']:g}")] == min(kls.values())
    only_pos = [r for r in train if r.meta["polarity"] == "positive"]
    with pytest.raises(SteeringError, match="polarity"):
        build_caa(llama, only_pos, CaaConfig(), CFG, name="refusal")
