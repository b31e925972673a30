"""Faithfulness machinery: ablation runner, matched random controls, intervals, the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from circuitlab import tracking
from circuitlab.lrp.attribution import AttributionOptions, attribute_rows, metric_values
from circuitlab.lrp.faithfulness import (
    AblationRunner,
    Grid,
    curve_area,
    evaluate_faithfulness,
    matched_random_mask,
    t_interval,
)
from circuitlab.lrp.selection import aggregate
from circuitlab.models import LoadedModel
from circuitlab.prompts import encode_rows
from circuitlab.report.plots import faithfulness_curves
from tiny_models import build_tiny, make_rows


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny("LlamaForCausalLM", tmp_path_factory.mktemp("llama"))


def _plain_metric(lm: LoadedModel, rows) -> float:
    batch = encode_rows(rows, lm.tokenizer)
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    last = logits[torch.arange(len(batch)), batch.last]
    return float(metric_values(last, batch.target, batch.counterfactual, "logit_diff").mean())


def test_runner_without_ablation_is_the_plain_model(llama: LoadedModel) -> None:
    rows = make_rows(6)
    runner = AblationRunner(llama, rows, Grid(6, 1), "logit_diff", batch_size=4)
    assert runner.metric_with(None, None) == pytest.approx(_plain_metric(llama, rows), rel=1e-5)


def test_ablating_with_the_true_activations_changes_nothing(llama: LoadedModel) -> None:
    """Replacing every cell by a single prompt's own activations leaves that prompt unchanged."""
    rows = make_rows(1)
    grid = Grid(n_positions=3, start=1)
    runner = AblationRunner(llama, rows, grid, "logit_diff", batch_size=1)
    own = runner.mean_activations(rows, batch_size=1)  # one prompt: its own activations
    everything = torch.ones_like(own, dtype=torch.bool)
    assert runner.metric_with(everything, own) == pytest.approx(
        runner.metric_with(None, None), abs=1e-5
    )
    assert runner.metric_with(everything, None) != pytest.approx(runner.metric_with(None, None))


def test_zero_ablation_only_touches_analysed_positions(llama: LoadedModel) -> None:
    """Ablating an offset that no prompt has (beyond its start) is a no-op."""
    rows = make_rows(1)  # length 3 → offsets −2, −1 (BOS filtered)
    runner = AblationRunner(llama, rows, Grid(n_positions=5, start=1), "logit_diff", 1)
    outside = torch.zeros(2, 5, 64, dtype=torch.bool)
    outside[:, :3] = True  # offsets −5, −4, −3: before the prompt or its position 0
    assert runner.metric_with(outside, None) == pytest.approx(runner.metric_with(None, None))


def test_matched_random_mask_matches_layer_and_position_counts() -> None:
    g = torch.Generator().manual_seed(0)
    circuit = torch.rand(3, 4, 16, generator=g) > 0.8
    valid = torch.ones_like(circuit)
    valid[:, 0] = False
    circuit &= valid
    rnd = matched_random_mask(circuit, valid, g)
    assert torch.equal(rnd.sum(-1), circuit.sum(-1))
    assert not (rnd & ~valid).any()
    assert not torch.equal(rnd, circuit)


def test_t_interval_and_curve_area() -> None:
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert curve_area([0.001, 0.01, 0.1], [0.0, 0.5, 1.0]) == pytest.approx(0.5)
    assert curve_area([0.01, 0.1], [0.8, 0.8]) == pytest.approx(0.8)


def test_report_structure_and_full_circuit_recovers_everything(
    llama: LoadedModel, tmp_path: Path
) -> None:
    rows = make_rows(12)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    opts = AttributionOptions(batch_size=4)
    grid = aggregate(attribute_rows(llama, train, opts, progress=False), "mean")
    report = evaluate_faithfulness(
        llama, train, test, grid, opts=opts, sizes=[0.01, 1.0], ablations=["zero"],
        random_seeds=2, calibration_neurons=10, target=0.8, progress=False,
    )  # fmt: skip
    zero = report["ablations"]["zero"]
    assert list(zero["curve"]) == ["0.01", "1"]  # keyed by size, so W&B and DVC can read it
    whole = zero["curve"]["1"]
    # keeping every neuron (size 1.0) is the unablated model: faithfulness 1, and so is random
    assert whole["faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert whole["random_faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert whole["removal_drop"] == pytest.approx(1.0, abs=1e-4)
    assert zero["smallest_size_reaching_target"] in (0.01, 1.0)
    cal = report["calibration"]
    assert cal["n_neurons"] == 10
    assert set(cal) >= {"grad_x_act", "lrp_full", "lrp_half", "lrp_cp_attn"}
    # the report goes through the metrics door as it is, and plots
    tracking.log_metrics("lrp_faithfulness", report, tmp_path / "m.json", run_name="t")
    assert tracking.read_metrics(tmp_path / "m.json")["ablations"]["zero"]["curve"]["1"]
    faithfulness_curves(report, tmp_path / "f.png", "test")
    assert (tmp_path / "f.png").stat().st_size > 0
