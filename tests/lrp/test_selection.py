"""Selection and aggregation against brute-force loops over dicts (the seed's way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuitlab.errors import ArtifactError, ConfigError
from circuitlab.lrp.attribution import Attributions
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.lrp.selection import (
    aggregate,
    contrastive_difference,
    select,
    select_contrastive,
    top_fraction_mask,
)


def _grid(seed: int = 0, shape: tuple[int, int, int] = (3, 2, 8)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    x[x.abs() < 0.3] = 0  # some zeros, which are never selected
    return x


def _as_dict(grid: torch.Tensor) -> dict[tuple[int, int, int], float]:
    n_pos = grid.shape[1]
    return {(ly, p - n_pos, n): float(grid[ly, p, n]) for ly, p, n in grid.nonzero().tolist()}


def _by_magnitude(d: dict) -> list:
    return sorted(d.items(), key=lambda kv: -abs(kv[1]))


@given(seed=st.integers(0, 10_000), threshold=st.floats(0.01, 1.0))
@settings(max_examples=40, deadline=None)
def test_threshold_is_the_smallest_prefix_reaching_the_share(seed: int, threshold: float) -> None:
    grid = _grid(seed)
    ref = _as_dict(grid)
    total = sum(abs(v) for v in ref.values())
    want, cum = {}, 0.0
    for key, value in _by_magnitude(ref):  # the seed's loop
        want[key] = value
        cum += abs(value)
        if cum >= threshold * total:
            break
    got = select(grid, "threshold", threshold=threshold)
    assert len(got) == len(want)
    assert sum(abs(v) for v in got.values()) == pytest.approx(cum, rel=1e-5)


def test_topk_percentage_and_per_layer() -> None:
    grid = _grid(1)
    ref = _as_dict(grid)
    assert set(select(grid, "topk", top_k=5)) == {k for k, _ in _by_magnitude(ref)[:5]}
    pct = select(grid, "percentage", threshold=0.5, reference=2.0)
    assert set(pct) == {k for k, v in ref.items() if abs(v) >= 1.0}
    per = select(grid, "per_layer_topk", per_layer_topk=2)
    want = set()
    for layer in range(grid.shape[0]):
        mine = [(k, v) for k, v in ref.items() if k[0] == layer]
        want |= {k for k, _ in _by_magnitude(dict(mine))[:2]}
    assert set(per) == want
    trimmed = select(grid, "per_layer_topk", per_layer_topk=2, top_k=3)
    assert set(trimmed) == {k for k, _ in _by_magnitude({k: ref[k] for k in want})[:3]}
    for key, value in per.items():
        assert ref[key] == pytest.approx(value)


def test_keys_use_end_relative_positions() -> None:
    grid = torch.zeros(2, 3, 4)
    grid[1, 2, 3] = 5.0  # last position
    grid[0, 0, 1] = -4.0  # third from the end
    assert select(grid, "topk", top_k=2) == {(1, -1, 3): 5.0, (0, -3, 1): -4.0}


def test_empty_selection_says_the_largest_attribution() -> None:
    grid = torch.zeros(2, 1, 4)
    grid[0, 0, 0] = 0.25
    with pytest.raises(ConfigError, match=r"largest \|attribution\| seen is 0\.25"):
        select(grid, "percentage", threshold=0.5, reference=10.0)


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(ConfigError, match="threshold, topk, percentage, per_layer_topk"):
        select(_grid(), "greedy")
    with pytest.raises(ConfigError, match="needs top_k"):
        select(_grid(), "topk")


def _attr(seed: int = 0) -> Attributions:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(5, 2, 3, 4, generator=g)
    metric = torch.tensor([1.0, 2.0, -1.5, 4.0, 0.5])
    return Attributions(scores, metric, torch.ones(5, 3, dtype=torch.bool))


def test_mean_and_any_aggregation_match_loops() -> None:
    attr = _attr()
    torch.testing.assert_close(aggregate(attr, "mean"), attr.scores.mean(0))
    anyg = aggregate(attr, "any", per_prompt_threshold=0.3)
    for ly, p, n in torch.cartesian_prod(*(torch.arange(s) for s in (2, 3, 4))).tolist():
        kept = [
            float(attr.scores[b, ly, p, n])
            for b in range(5)
            if abs(attr.scores[b, ly, p, n]) >= 0.3 * abs(attr.metric[b])
        ]
        want = max(kept, key=abs) if kept else 0.0
        assert float(anyg[ly, p, n]) == pytest.approx(want)
    with pytest.raises(ConfigError, match="mean, any"):
        aggregate(attr, "median")


def test_top_fraction_mask_and_contrastive() -> None:
    grid = _grid(2)
    mask = top_fraction_mask(grid, 0.25)
    assert int(mask.sum()) == round(0.25 * grid.numel())
    assert grid.abs()[mask].min() >= grid.abs()[~mask].max()
    pos = torch.randn(6, 3, 8)
    neg = torch.randn(4, 3, 8)
    diff = contrastive_difference(pos, neg)
    torch.testing.assert_close(diff, pos.mean(0) - neg.mean(0))
    chosen = select_contrastive(diff, 4, frozenset({0}))
    assert len(chosen) == 4 and all(p == -1 and ly != 0 for ly, p, _ in chosen)
    flat = {(ly, -1, n): float(diff[ly, n]) for ly in (1, 2) for n in range(8)}
    assert set(chosen) == {k for k, _ in _by_magnitude(flat)[:4]}


def test_circuit_round_trip_and_seed_keys(tmp_path: Path) -> None:
    circuit = NeuronCircuit(
        neurons={(0, -1, 3): 0.5, (2, -4, 7): -1.25},
        model="toy",
        task="ioi",
        method="lrp",
        params={"metric": "logit_diff"},
        metric_value=3.5,
        n_prompts=64,
        n_layers=4,
        d_mlp=512,
    )
    path = tmp_path / "lrp.json"
    circuit.save(path)
    data = json.loads(path.read_text())
    assert data["neurons"] == {"0,-1,3": 0.5, "2,-4,7": -1.25}
    assert {"prompt", "target_token", "total_logit_diff"} <= set(data)  # seed's Circuit.load
    assert NeuronCircuit.load(path) == circuit
    assert circuit.per_layer() == {0: 1, 1: 0, 2: 1, 3: 0}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "top level: Input should be a valid dictionary"),
        ({"neurons": {"1,2": 0.1}, "n_neurons": 1}, "'1,2'"),
        (
            {"neurons": {"1,2,3": "x"}, "n_neurons": 1},
            "neurons.1,2,3: Input should be a valid number",
        ),
        ({"model": None}, "model: Input should be a valid string"),
        ({"n_neurons": 5}, "n_neurons=5 but 1 neurons listed"),
        ("drop task", "task: Field required"),  # no silent defaults
    ],
)
def test_malformed_circuit_is_a_clear_error(tmp_path: Path, payload: object, message: str) -> None:
    valid = NeuronCircuit({(0, -1, 3): 0.5}, "tiny", "toy", "lrp", n_layers=2, d_mlp=8).to_json()
    if payload == "drop task":
        valid.pop("task")
        payload = valid
    elif isinstance(payload, dict):
        payload = {**valid, **payload}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ArtifactError) as err:
        NeuronCircuit.load(path)
    assert message in str(err.value) and str(path) in str(err.value), str(err.value)
    assert "'lrp_circuit' rule" in str(err.value)
