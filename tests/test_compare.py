"""CAA vs circuit (`circuitlab.compare`): the seed's overlap figures against a slow reference,
the permutation null (small p on a planted overlap, uniform on random sets, ≈ hypergeometric),
the sparse non-negative decomposition, the head to head against per-prompt references, bad
input, and the CLI (artifacts on success, nothing on error)."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from circuitlab.compare.decompose import rebuilt_vector, sparse_nonnegative
from circuitlab.compare.head_to_head import (
    matched_effect,
    neuron_steer,
    sweep_method,
)
from circuitlab.compare.overlap import (
    circuit_mask,
    column_projections,
    compare_vector,
    down_proj_weights,
    global_top_mask,
    overlap_statistics,
    p_value,
    top_circuit_mask,
    top_k_mask,
    vector_space,
)
from circuitlab.compare.settings import CompareConfig
from circuitlab.compare.stage import behaviour_probe, check_inputs, compare_behaviour
from circuitlab.compare.stage import metrics_view as compare_metrics_view
from circuitlab.errors import ArtifactError, ConfigError, DatasetError
from circuitlab.io import write_jsonl
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models.adapters import ModelDims
from circuitlab.steering.caa import (
    activation_weighted_vectors,
    add_vector,
    control_vectors,
    neuron_differences,
    save_vectors,
)
from circuitlab.steering.neurons import steer_neurons
from cli_support import call
from tiny_models import build_tiny, make_rows

DIMS = ModelDims(
    n_layers=3, d_model=16, d_mlp=40, n_heads=4, n_kv_heads=2, head_dim=4, vocab_size=64
)
NEUTRAL = ["w3 w4 w5", "w10 w11", "w20 w21 w22 w23", "w40 w41 w42"]


# ----------------------------------------------------------------- slow seed reference
def ref_decompose(cv: torch.Tensor, w: torch.Tensor) -> dict[int, float]:
    """The seed's decompose_cv_to_neurons, one column at a time."""
    out = {}
    for i in range(w.shape[1]):
        col = w[:, i].double()
        v = float(cv.double() @ col) / (float(col.norm()) + 1e-8)
        if abs(v) > 1e-6:
            out[i] = v
    return dict(sorted(out.items(), key=lambda kv: abs(kv[1]), reverse=True))


def ref_compare(
    circuit: NeuronCircuit, cvs: torch.Tensor, ws: torch.Tensor, top_k: int, top_n: int
) -> dict[str, object]:
    """The seed's compare_circuit_to_cv with plain Python sets and loops."""
    by_layer: dict[int, set[int]] = {}
    for ly, _, n in circuit.neurons:
        by_layer.setdefault(ly, set()).add(n)
    per_layer, ves, cv_ranked = {}, [], []
    for ly in range(cvs.shape[0]):
        dec = ref_decompose(cvs[ly], ws[ly])
        top = list(dec)[:top_k]
        per_layer[ly] = len(set(top) & by_layer.get(ly, set()))
        total = sum(v * v for v in dec.values())
        ves.append(sum(dec.get(n, 0.0) ** 2 for n in by_layer.get(ly, set())) / total)
        cv_ranked += [(ly, n, abs(dec[n])) for n in top]
    cv_ranked.sort(key=lambda x: x[2], reverse=True)
    circuit_ranked = [(ly, n) for (ly, _, n), _ in circuit.top(200)]
    return {
        "per_layer": per_layer,
        "total": sum(per_layer.values()),
        "ve": ves,
        "mean_ve": sum(ves) / len(ves),
        "top": len(set(circuit_ranked[:top_n]) & {(ly, n) for ly, n, _ in cv_ranked[:top_n]}),
    }


def random_circuit(g: torch.Generator, sizes: list[int], d: int = 40) -> NeuronCircuit:
    neurons = {}
    for ly, k in enumerate(sizes):
        for n in torch.randperm(d, generator=g)[:k].tolist():
            neurons[(ly, -1, n)] = float(torch.randn(1, generator=g))
    return NeuronCircuit(neurons, "m", "b", "lrp", n_layers=len(sizes), d_mlp=d)


def test_projection_and_overlaps_match_the_seed_reference() -> None:
    g = torch.Generator().manual_seed(0)
    ws = torch.randn(3, 16, 40, generator=g)
    cvs = torch.randn(3, 16, generator=g)
    circuit = random_circuit(g, [6, 0, 11])
    proj = column_projections(cvs, ws)
    for ly in range(3):
        ref = ref_decompose(cvs[ly], ws[ly])
        got = {i: float(proj[ly, i]) for i in ref}
        assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    res = compare_vector(
        proj, circuit_mask(circuit, DIMS), top_circuit_mask(circuit, DIMS, 8),
        top_k=10, top_n=8, permutations=99, seed=0,
    )  # fmt: skip
    ref = ref_compare(circuit, cvs, ws, top_k=10, top_n=8)
    assert {int(k): v["overlap"] for k, v in res["layers"].items()} == ref["per_layer"]
    assert res["total_overlap"] == ref["total"]
    assert [res["layers"][str(ly)]["variance_explained"] for ly in range(3)] == pytest.approx(
        ref["ve"], rel=1e-5
    )
    assert res["mean_variance_explained"] == pytest.approx(ref["mean_ve"], rel=1e-5)
    assert res["top_overlap"] == ref["top"]
    assert res["total_overlap"] > 0  # the comparison is not vacuous


def test_global_top_is_taken_from_the_per_layer_top_k() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 0.1], [0.5, 0.4, 0.3, 0.2]])
    per_layer = top_k_mask(scores, 2)
    assert per_layer.tolist() == [[True, True, False, False], [True, True, False, False]]
    # 3.0 is larger than layer 1's values but not in layer 0's top-2: the seed drops it
    assert global_top_mask(scores, per_layer, 3).nonzero().tolist() == [[0, 0], [0, 1], [1, 0]]


# ---------------------------------------------------------------------- permutation null
def test_planted_overlap_gets_the_smallest_p_value() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 40, generator=g)
    topk = top_k_mask(scores, 5)
    neurons = {(ly, -1, int(n)): 1.0 for ly, n in topk.nonzero().tolist()}
    circuit = NeuronCircuit(neurons, "m", "b", "lrp", n_layers=3, d_mlp=40)
    res = compare_vector(
        scores, circuit_mask(circuit, DIMS), top_circuit_mask(circuit, DIMS, 15),
        top_k=5, top_n=15, permutations=199, seed=0,
    )  # fmt: skip
    floor = 1 / 200
    assert res["total_overlap"] == 15
    assert res["total_overlap_p"] == pytest.approx(floor)
    assert res["top_overlap_p"] == pytest.approx(floor)
    assert res["mean_variance_explained_p"] == pytest.approx(floor)
    for cell in res["layers"].values():
        assert cell["overlap_p"] == pytest.approx(floor)
        assert cell["overlap_p_hypergeom"] < 1e-5


def test_random_circuits_give_roughly_uniform_p_values() -> None:
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(2, 40, generator=g)
    dims = dataclasses.replace(DIMS, n_layers=2)
    ps, overlap_ps = [], []
    for _ in range(150):
        circuit = random_circuit(g, [5, 5])
        res = compare_vector(
            scores, circuit_mask(circuit, dims), top_circuit_mask(circuit, dims, 10),
            top_k=8, top_n=10, permutations=99, seed=int(torch.randint(0, 10**6, (1,), generator=g)),
        )  # fmt: skip
        ps.append(res["mean_variance_explained_p"])
        overlap_ps.append(res["total_overlap_p"])
    # continuous statistic: uniform on {1/100, …, 1}; a discrete one: conservative
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert 0.4 < float(np.mean(ps)) < 0.6
    for alpha in (0.05, 0.2, 0.5):
        assert np.mean(np.array(overlap_ps) <= alpha) <= alpha + 0.08


def test_permutation_p_estimates_the_hypergeometric_p() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 40, generator=g)
    topk = top_k_mask(scores, 10)
    neurons = {}
    for ly, planted in enumerate((1, 3, 5)):  # 1, 3, 5 of 8 circuit neurons in the top-10
        inside = topk[ly].nonzero().flatten()[:planted].tolist()
        outside = (~topk[ly]).nonzero().flatten()[: 8 - planted].tolist()
        neurons |= {(ly, -1, n): 1.0 for n in inside + outside}
    circuit = NeuronCircuit(neurons, "m", "b", "lrp", n_layers=3, d_mlp=40)
    res = compare_vector(
        scores, circuit_mask(circuit, DIMS), top_circuit_mask(circuit, DIMS, 10),
        top_k=10, top_n=10, permutations=4000, seed=0,
    )  # fmt: skip
    for cell in res["layers"].values():
        assert cell["overlap_p"] == pytest.approx(cell["overlap_p_hypergeom"], abs=0.025)
    assert [res["layers"][str(ly)]["overlap"] for ly in range(3)] == [1, 3, 5]


def test_p_value_add_one_and_ties() -> None:
    null = torch.tensor([[0.0], [1.0], [2.0], [2.0]])
    assert p_value(null, torch.tensor([2.0])).item() == pytest.approx(3 / 5)
    assert p_value(null, torch.tensor([9.0])).item() == pytest.approx(1 / 5)
    sq = torch.ones(1, 4)
    stats_ = overlap_statistics(
        sq, torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool),
        torch.tensor([[True, False, True, False]]), torch.zeros(1, 4, dtype=torch.bool),
    )  # fmt: skip
    assert stats_["variance_explained"].tolist() == [0.5]


# ------------------------------------------------------------------------ decomposition
def test_nnls_is_exact_on_a_vector_built_from_known_columns() -> None:
    g = torch.Generator().manual_seed(4)
    w = torch.randn(64, 128, generator=g)
    support = {3: 2.0, 10: 0.7, 50: -1.5, 99: 1.1}
    y = sum(c * w[:, i] for i, c in support.items())
    fit = sparse_nonnegative(y, w, [1, 2, 4, 8])
    assert fit[4]["r2"] == pytest.approx(1.0, abs=1e-9)
    assert set(fit[4]["support"]) == set(support)
    coef = {
        i: s * c for i, s, c in zip(fit[4]["support"], fit[4]["signs"], fit[4]["coef"], strict=True)
    }
    assert coef == pytest.approx(support, rel=1e-6)
    assert fit[1]["r2"] < fit[2]["r2"] < fit[4]["r2"]
    # the non-negative (unsigned) version cannot write the negative coefficient
    assert sparse_nonnegative(y, w, [4], signed=False)[4]["r2"] < 0.999


def test_nnls_r2_is_monotone_in_sparsity() -> None:
    g = torch.Generator().manual_seed(5)
    w, y = torch.randn(24, 80, generator=g), torch.randn(24, generator=g)
    ks = list(range(1, 31))
    fit = sparse_nonnegative(y, w, ks)
    r2 = [fit[k]["r2"] for k in ks]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(r2))
    assert 0 < r2[0] < r2[-1] <= 1 + 1e-12
    assert r2[-1] > 0.99  # 30 > 24 dimensions: (nearly) everything is written


# ---------------------------------------------------------------------------- bad input
def test_bad_circuits_and_vectors_are_clear_errors() -> None:
    empty = NeuronCircuit({}, "m", "b", "lrp", n_layers=3, d_mlp=40)
    with pytest.raises(ArtifactError, match="has no neurons"):
        circuit_mask(empty, DIMS)
    far = NeuronCircuit({(7, -1, 0): 1.0}, "m", "b", "lrp", n_layers=8, d_mlp=40)
    with pytest.raises(ArtifactError, match=r"layer\(s\) \[7\], outside the model's 3 layers"):
        circuit_mask(far, DIMS)
    wide = NeuronCircuit({(0, -1, 99): 1.0}, "m", "b", "lrp", n_layers=3, d_mlp=100)
    with pytest.raises(ArtifactError, match="outside the model's d_mlp=40"):
        circuit_mask(wide, DIMS)
    with pytest.raises(ArtifactError, match=r"shape \(4, 16\).*\[3, 16\]"):
        vector_space("resid", torch.zeros(4, 16), DIMS)
    with pytest.raises(ArtifactError, match=r"neuron_diff.*\[3, 40\]"):
        vector_space("neuron_diff", torch.zeros(3, 16), DIMS)
    with pytest.raises(ArtifactError, match="NaN"):
        vector_space("resid", torch.full((3, 16), float("nan")), DIMS)
    with pytest.raises(ArtifactError, match="do not match"):
        column_projections(torch.zeros(3, 16), torch.zeros(2, 16, 40))


# ------------------------------------------------------------------- with a tiny model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("compare")
    lm = build_tiny("LlamaForCausalLM", root / "tiny")
    rows = make_rows(24)
    train = [r for r in rows if r.split == "train"]
    pos = [r.prompt for r in train if r.meta["polarity"] == "positive"]
    neg = [r.prompt for r in train if r.meta["polarity"] == "negative"]
    nd = neuron_differences(lm, pos, neg)
    vectors = {
        "resid": control_vectors(lm, pos, neg, site="resid"),
        "mlp_out": control_vectors(lm, pos, neg, site="mlp_out"),
        "neuron_diff": nd,
        "activation_weighted": activation_weighted_vectors(lm, nd),
    }
    top = nd.abs().flatten().topk(12).indices.tolist()
    circuit = NeuronCircuit(
        {(i // 64, -1, i % 64): float(nd.flatten()[i]) for i in top},
        "tiny", "b", "contrastive", n_layers=2, d_mlp=64,
    )  # fmt: skip
    assert {ly for ly, _, _ in circuit.neurons} == {0, 1}
    return root, lm, rows, vectors, circuit


def last_log_probs(lm, prompts: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Next-token log-probabilities at each prompt's end, under whatever steering is active."""
    from circuitlab.prompts import encode_prompts
    from circuitlab.steering.neurons import last_logits

    return last_logits(lm, *encode_prompts(lm.tokenizer, prompts)).log_softmax(-1)


def test_rebuilt_vector_equals_shifting_the_circuit_neurons(tiny) -> None:
    """Adding Σ Δa_i W[:, i] after each circuit layer ≡ adding Δa_i to the neurons themselves."""
    _, lm, rows, vectors, circuit = tiny
    mask = circuit_mask(circuit, lm.dims)
    w = down_proj_weights(lm)
    rebuilt = rebuilt_vector(vectors["neuron_diff"], w, mask)
    batch = [r.prompt for r in rows[:6]]
    base = last_log_probs(lm, batch)
    with (
        add_vector(lm, 0, rebuilt[0], 1.0, positions="all"),
        add_vector(lm, 1, rebuilt[1], 1.0, positions="all"),
    ):
        via_vector = last_log_probs(lm, batch)
    shift = vectors["neuron_diff"] * mask
    with lm.adapter.edit_neurons(lm.model, lambda ly, x: x + shift[ly].to(x.dtype)):
        via_neurons = last_log_probs(lm, batch)
    assert not torch.allclose(via_vector, base, atol=1e-4)  # the intervention did something
    torch.testing.assert_close(via_vector, via_neurons, atol=1e-5, rtol=1e-4)
    # the MLP-output vector is W_down @ neuron difference (no bias in Llama)
    torch.testing.assert_close(
        vectors["mlp_out"], vectors["activation_weighted"], atol=1e-5, rtol=1e-4
    )


def test_sweep_matches_a_per_prompt_reference(tiny) -> None:
    _, lm, rows, _, circuit = tiny
    test = [r for r in rows if r.split == "test"]
    probe = behaviour_probe(lm, test, NEUTRAL, 64)
    steer = neuron_steer(lm, circuit, "all")
    points = sweep_method(lm, steer, [0.0, 1.0, 3.0], probe)
    by_m = {p["multiplier"]: p for p in points}
    assert by_m[1.0]["effect"] == 0.0 and by_m[1.0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert by_m[0.0]["kl"] > 1e-6 and abs(by_m[0.0]["effect"]) > 1e-6
    for p in points:  # bootstrap intervals over prompts, as the steering reports give
        for key in ("effect", "effect_positive", "effect_negative", "kl"):
            assert p[f"{key}_lo"] <= p[key] <= p[f"{key}_hi"], (key, p)
    from circuitlab.steering.neurons import NeuronSet, prompt_logits

    def ld(m: float | None, r) -> float:
        with steer_neurons(lm, NeuronSet.from_circuit(circuit), m) if m is not None else _null():
            lp = prompt_logits(lm, [r.prompt])[0].log_softmax(-1)
        beh, con = (r.target, r.counterfactual) if r.meta["polarity"] == "positive" else (
            r.counterfactual, r.target)  # fmt: skip
        ids = lm.tokenizer([r.prompt + beh, r.prompt + con])["input_ids"]
        return float(lp[ids[0][-1]] - lp[ids[1][-1]])

    for m in (0.0, 3.0):
        ref = np.mean([ld(m, r) - ld(None, r) for r in test])
        assert by_m[m]["effect"] == pytest.approx(ref, abs=1e-5)
        kls = []
        for text in NEUTRAL:
            base = prompt_logits(lm, [text])[0].log_softmax(-1)
            with steer_neurons(lm, NeuronSet.from_circuit(circuit), m):
                st = prompt_logits(lm, [text])[0].log_softmax(-1)
            kls.append(float((st.exp() * (st - base)).sum()))  # KL(steered ‖ unsteered)
        # float32 log-probabilities: a KL of ~1e-6 (multiplier 0) carries ~1e-7 of rounding
        # that depends on batching and kernels; larger KLs are held to 1e-4 relative
        assert by_m[m]["kl"] == pytest.approx(np.mean(kls), rel=1e-4, abs=2e-7)


def _null():
    from contextlib import nullcontext

    return nullcontext()


def test_matched_effect_interpolates_kl_at_the_common_effect() -> None:
    def curve(slope: float, cost: float, mults: list[float], neutral: float) -> list[dict]:
        return [
            {"multiplier": m, "effect": slope * (m - neutral), "kl": cost * (m - neutral) ** 2}
            for m in mults
        ]

    curves = {
        "a": curve(1.0, 1.0, [-2, -1, 1, 2, 3], 0.0),  # reaches ±2 (−2 side), 3 (+ side)
        "b": curve(0.5, 0.1, [0.0, 2.0, 5.0], 1.0),  # +2 at m=5, −0.5 at m=0
    }
    out = matched_effect(
        curves, {"a": 0.0, "b": 1.0}, {"increase": ("effect", 1), "decrease": ("effect", -1)}
    )
    inc = out["increase"]
    assert inc["effect"] == pytest.approx(2.0)  # the largest effect both reach
    assert inc["methods"]["a"]["kl"] == pytest.approx(4.0)  # exactly at m=2
    # b: effect 0.5 (kl 0.1) at m=2, 2.0 (kl 1.6) at m=5 → kl 1.6 at 2.0
    assert inc["methods"]["b"]["kl"] == pytest.approx(1.6)
    assert inc["best"] == "b"
    dec = out["decrease"]
    assert dec["effect"] == pytest.approx(0.5)
    assert dec["methods"]["a"]["kl"] == pytest.approx(0.5)  # between (0, 0) and m=−1 (1, 1)
    assert dec["methods"]["b"]["kl"] == pytest.approx(0.1)


def test_compare_behaviour_report(tiny) -> None:
    _, lm, rows, vectors, circuit = tiny
    cfg = CompareConfig(
        permutations=99, neutral_prompts=NEUTRAL, sparsity=[1, 4, 16], top_k=8, top_n=8,
        neuron_multipliers=[0.0, 2.0], vector_multipliers=[-2.0, 2.0],
    )  # fmt: skip
    rep = compare_behaviour(lm, rows, {"contrastive": circuit}, vectors, cfg)
    # the metrics (DVC, W&B) hold the scalars; sweeps and per-layer tables stay in the artifact
    view = compare_metrics_view(rep)
    assert set(view) == {"n_test_prompts", "n_neutral_prompts", "circuit_sizes", "caa",
                         "overlap", "matched"}  # fmt: skip
    assert view["overlap"]["contrastive"]["neuron_diff"] == {
        k: rep["overlap"]["contrastive"]["neuron_diff"][k]
        for k in ("total_overlap", "total_overlap_p")
    }
    assert set(rep["sweep"]) == {
        "caa",
        "contrastive_neurons",
        "contrastive_random_neurons",
        "contrastive_vector",
    }
    assert "contrastive_random_neurons" not in rep["matched"]["increase"]["methods"]
    ctrl, circ = (
        rep["sweep"]["contrastive_random_neurons"]["0"],
        rep["sweep"]["contrastive_neurons"]["0"],
    )
    assert ctrl["kl"] > 0 and ctrl["effect"] != circ["effect"]  # other neurons, same sizes
    assert 0 <= rep["caa"]["layer"] < 2 and set(rep["caa"]["layer_effects"]) == {"0", "1"}
    # the contrastive circuit is the top |neuron_diff|: all its neurons are in the top-k lists
    nd = rep["overlap"]["contrastive"]["neuron_diff"]
    assert nd["top_overlap"] == 8 and nd["top_overlap_p"] < 0.05
    for ly in ("0", "1"):
        dec = rep["decomposition"][ly]
        assert dec["neuron_diff_full"] == pytest.approx(1.0, abs=1e-6)
        assert dec["nnls"]["1"] <= dec["nnls"]["4"] <= dec["nnls"]["16"]
    for method, pts in rep["sweep"].items():
        assert any(p["kl"] > 0 for p in pts.values()), method
    # the directions are read on their own prompts: the mean over both halves is the average
    half = rep["sweep"]["contrastive_neurons"]["0"]
    assert half["effect"] == pytest.approx((half["effect_positive"] + half["effect_negative"]) / 2)
    assert rep["matched"]["increase"]["measured_on"] == "effect_negative"
    json.dumps(rep)  # plain numbers and strings only


def test_check_inputs_names_the_problem(tiny) -> None:
    _, lm, _, vectors, circuit = tiny
    cfg = CompareConfig()
    with pytest.raises(ArtifactError, match=r"lack \['neuron_diff'\]"):
        check_inputs(
            lm, {"c": circuit}, {k: v for k, v in vectors.items() if k != "neuron_diff"}, cfg
        )
    bad = dict(vectors, resid=torch.zeros(5, lm.dims.d_model))
    with pytest.raises(ArtifactError, match="were the CAA vectors computed on another model"):
        check_inputs(lm, {"c": circuit}, bad, cfg)
    with pytest.raises(ConfigError, match="caa_layer=5 is outside"):
        check_inputs(lm, {"c": circuit}, vectors, CompareConfig(caa_layer=5))
    with pytest.raises(DatasetError, match="no behaviour rows"):
        behaviour_probe(lm, [r.model_copy(update={"meta": {}}) for r in make_rows(4)], NEUTRAL, 8)


# --------------------------------------------------------------------------------- CLI


def test_cli_writes_artifacts_and_nothing_on_error(tiny, tmp_path, monkeypatch, capsys) -> None:
    root, _, rows, vectors, circuit = tiny
    data = tmp_path / "tiny" / "b.jsonl"
    write_jsonl(data, [r.model_dump() for r in rows])
    vec = save_vectors(tmp_path / "caa.safetensors", vectors, {"model": "tiny"})
    good = tmp_path / "contrastive.json"
    circuit.save(good)
    params = json.dumps(
        {"permutations": 99, "neutral_prompts": NEUTRAL, "sparsity": [1, 4],
         "neuron_multipliers": [0.0, 2.0], "vector_multipliers": [-1.0, 1.0]}
    )  # fmt: skip
    out = tmp_path / "out"

    def run(circuit_file: Path, p: str = params) -> tuple[int, str]:
        return call(
            "compare", "--model", root / "tiny", "--data", data,
            "--circuits", circuit_file, "--vectors", vec, "--params", p,
            "--out", out / "c.json", "--metrics", out / "m.json",
            "--pareto-plot", out / "p.png", "--overlap-plot", out / "o.png",
        )  # fmt: skip

    empty = tmp_path / "lrp.json"
    NeuronCircuit({}, "tiny", "b", "lrp", n_layers=2, d_mlp=64).save(empty)
    code, err = run(empty)
    assert code == 2 and "has no neurons" in err
    far = tmp_path / "far" / "lrp.json"
    NeuronCircuit({(9, -1, 1): 1.0}, "tiny", "b", "lrp", n_layers=10, d_mlp=64).save(far)
    code, err = run(far)
    assert code == 2 and "outside the model" in err
    code, err = run(good, json.dumps({"neuron_multipliers": ["x"]}))
    assert code == 2 and "neuron_multipliers" in err
    assert not out.exists() or not any(out.iterdir())

    code, err = run(good)
    assert code == 0, err
    art = json.loads((out / "c.json").read_text())
    assert art["format"] == "circuitlab.compare/2" and art["behaviour"] == "b"
    metrics = json.loads((out / "m.json").read_text())
    assert metrics["overlap"]["contrastive"]["resid"]["total_overlap_p"] > 0
    assert (out / "p.png").stat().st_size > 0 and (out / "o.png").stat().st_size > 0


def test_compare_steers_a_circuit_as_the_steering_stage_does(tiny) -> None:
    """With the steering section: above multiplier 1 the circuit's supporters (the steering
    stage's own sets, `neuron_sets`), below it the whole circuit; the matched effect uses only
    points within the budget's KL."""
    from circuitlab.steering.evaluate import run_once
    from circuitlab.steering.neurons import NeuronSet
    from circuitlab.steering.settings import SteeringConfig
    from circuitlab.steering.stages import neuron_sets

    _, lm, rows, vectors, circuit = tiny
    cfg = CompareConfig(
        permutations=99, neutral_prompts=NEUTRAL, sparsity=[1], top_k=8, top_n=8,
        neuron_multipliers=[0.0, 2.0], vector_multipliers=[-2.0, 2.0],
    )  # fmt: skip
    steering = SteeringConfig(budget={"max_kl": 0.25})
    rep = compare_behaviour(lm, rows, {"contrastive": circuit}, vectors, cfg, steering)
    train = [r for r in rows if r.split == "train"]
    sets, signs = neuron_sets(lm, circuit, train, steering, is_behaviour=True)
    assert rep["neuron_signs"]["contrastive"] == signs
    assert signs["n_steered"]["amplify"] == len(sets["amplify"]) < len(circuit)
    # the ×2 point is the supporters' ×2: the same logit difference as steering them directly
    probe = behaviour_probe(lm, [r for r in rows if r.split == "test"], NEUTRAL, cfg.max_prompts)
    with torch.no_grad(), steer_neurons(lm, NeuronSet.from_pairs(sets["amplify"].pairs()), 2.0):
        run, _ = run_once(lm, probe.prompts, (), probe.neutral, None, None)
    assert rep["sweep"]["contrastive_neurons"]["2"]["logit_diff"] == pytest.approx(
        float((run["logit_diff"] * probe.sign).mean()), abs=1e-5
    )
    assert all(m["max_kl"] == 0.25 for m in rep["matched"].values())


def test_an_infinite_or_unmeasured_side_effect_is_never_within_the_budget() -> None:
    from circuitlab.compare.head_to_head import within_budget

    points = [{"kl": 0.1}, {"kl": float("inf")}, {"kl": 0.2}]
    assert within_budget(points, 0.5) == [{"kl": 0.1}]
    assert within_budget([{"kl": None}, {"kl": 0.1}], 0.5) == []
    assert within_budget([{"kl": 0.1}, {"kl": 0.9}], 0.5) == [{"kl": 0.1}]
    assert within_budget(points, None) == points


def test_down_projections_per_layer_equal_the_stacked_float32_copy(tiny) -> None:
    """W_down is read one layer at a time on the model's device (no [L, d_model, d_mlp] float32
    host copy); the projections are bit-identical to the old stacked formula, the rebuilt
    vector equal to float32 rounding (per-layer matmuls instead of one batched)."""
    _, lm, _, vectors, circuit = tiny
    w = down_proj_weights(lm)
    stacked = torch.stack(
        [lm.adapter.down_proj_weight(lm.model, ly).detach().float() for ly in range(len(w))]
    )
    assert len(w) == lm.dims.n_layers and torch.equal(w[1], stacked[1])
    with pytest.raises(IndexError, match="out of range"):
        w[lm.dims.n_layers]
    resid, mask = vectors["resid"], circuit_mask(circuit, lm.dims)
    old = torch.einsum("ld,ldn->ln", resid, stacked) / (stacked.norm(dim=1) + 1e-8)
    assert torch.equal(column_projections(resid, w), old)
    assert torch.equal(column_projections(resid, w), column_projections(resid, stacked))
    rebuilt = torch.einsum("ldn,ln->ld", stacked, vectors["neuron_diff"] * mask)
    assert torch.allclose(
        rebuilt_vector(vectors["neuron_diff"], w, mask), rebuilt, rtol=1e-6, atol=1e-9
    )
