"""Typed artifacts (`circuitlab.artifact`): written and read through one model each; a missing,
renamed or mistyped field is an error naming the file, the field and the rule to rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitlab.artifact import Artifact
from circuitlab.errors import ArtifactError
from circuitlab.io import write_json
from circuitlab.steering.artifact import SteeringReport


def interval(mean: float) -> dict[str, float | int]:
    return {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1, "n": 8}


def steering_report() -> dict:
    cell = {k: interval(0.5) for k in ("steered", "control", "delta", "steered_effect",
                                        "control_effect")}  # fmt: skip
    arm = {"multiplier": 0.0, "steered_effect": interval(-1.0), "control_effect": interval(0.0),
           "delta": interval(-1.0), "beats_control": True, "kl_neutral": 0.02,
           "kl_neutral_control": 0.01, "in_budget": True, "candidates": 1, "confidence": 0.95,
           "accuracy_drop": 0.0}  # fmt: skip
    return {
        "format": "circuitlab.steering/2", "model": "toy", "name": "capitals", "kind": "task",
        "method": "lrp", "steering": "neurons", "positions": "all", "n_test": 8,
        "metric_names": ["logit_diff"], "multipliers": [0.0, 1.0], "unsteered_multiplier": 1.0,
        "random_seeds": 5, "bootstrap": {"resamples": 1000, "confidence": 0.95},
        "metrics": {"logit_diff": {"unsteered": interval(2.0), "m=0": cell}},
        "leakage": {"ioi": {"m=0": -0.1}}, "samples": {},
        "budget": {"max_kl": 0.5, "max_accuracy_drop": 0.05, "multipliers": {
            "m=0": {"kl_neutral": 0.02, "accuracy_drop": 0.0, "in_budget": True}}},
        "summary": {"primary": "logit_diff", "unsteered": 2.0, "suppress": arm},
        "n_neurons": 3, "neurons_per_layer": {"0": 3},
    }  # fmt: skip


def test_an_artifact_round_trips_to_the_same_bytes(tmp_path: Path) -> None:
    raw = steering_report()
    first = write_json(tmp_path / "raw.json", raw).read_bytes()
    report = SteeringReport.load(tmp_path / "raw.json")
    assert report.summary.suppress is not None and report.summary.suppress.delta.mean == -1.0
    assert report.layer is None  # a neuron report has no CAA fields, and writes none
    assert report.save(tmp_path / "again.json").read_bytes() == first


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("summary"), "summary: Field required"),
        (lambda r: r.__setitem__("sumary", r.pop("summary")), "sumary: Extra inputs"),
        (lambda r: r.__setitem__("n_test", "many"), "n_test: Input should be a valid integer"),
        (lambda r: r["metrics"]["logit_diff"]["m=0"].pop("delta"), "m=0"),
        (lambda r: r.__setitem__("format", "circuitlab.steering/0"), "another version"),
    ],
)
def test_a_missing_renamed_or_mistyped_field_names_the_file(
    tmp_path: Path, edit, message: str
) -> None:  # type: ignore[no-untyped-def]
    raw = steering_report()
    edit(raw)
    path = tmp_path / "steering" / "lrp.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError) as err:
        SteeringReport.load(path)
    text = str(err.value)
    assert str(path) in text and message in text and "'steering' rule" in text, text


def test_a_missing_artifact_names_its_rule(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="made by the Snakemake rule 'steering'"):
        SteeringReport.load(tmp_path / "nope.json")


def test_every_artifact_kind_names_its_format_and_rule() -> None:
    from circuitlab.acdc.artifact import CircuitFile
    from circuitlab.blacklist.artifact import BlacklistFile
    from circuitlab.compare.artifact import CompareReport
    from circuitlab.lrp.circuit import NeuronCircuitFile

    for kind in (SteeringReport, CompareReport, NeuronCircuitFile, BlacklistFile, CircuitFile):
        assert issubclass(kind, Artifact)
        assert kind.FORMAT.startswith("circuitlab.") and "/" in kind.FORMAT and kind.RULE


def evaluation_metrics() -> dict:
    split = {"accuracy": 0.9, "logit_diff": 2.5, "pairwise_accuracy": 1.0, "n": 8}
    return {"train": dict(split), "test": dict(split)}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["test"].pop("accuracy"), "test.accuracy: Field required"),
        (lambda m: m.__setitem__("tset", m.pop("test")), "tset: Extra inputs"),
        (lambda m: m["test"].__setitem__("n", "eight"), "test.n: Input should be a valid integer"),
    ],
)
def test_a_metrics_file_with_a_missing_renamed_or_mistyped_field_names_the_file(
    tmp_path: Path, edit, message: str
) -> None:  # type: ignore[no-untyped-def]
    from circuitlab.models.metrics import EvaluationMetrics

    good = tmp_path / "good.json"
    write_json(good, {**evaluation_metrics(), "provenance": {"environment": {}}})
    assert EvaluationMetrics.load(good).test.accuracy == 0.9
    raw = evaluation_metrics()
    edit(raw)
    path = write_json(tmp_path / "capitals.json", raw)
    with pytest.raises(ArtifactError) as err:
        EvaluationMetrics.load(path)
    text = str(err.value)
    assert str(path) in text and message in text and "'evaluate_model' rule" in text, text


def test_a_stage_whose_metrics_do_not_fit_their_model_writes_nothing(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from circuitlab import tracking
    from circuitlab.models.metrics import EvaluationMetrics

    raw = evaluation_metrics()
    raw["test"]["acc"] = raw["test"].pop("accuracy")  # a stage that renamed a metric
    out = tmp_path / "m.json"
    with pytest.raises(ValidationError, match="accuracy"):
        tracking.log_metrics("evaluate_model", raw, out, schema=EvaluationMetrics)
    assert not out.exists()
    tracking.log_metrics("evaluate_model", evaluation_metrics(), out, schema=EvaluationMetrics)
    assert EvaluationMetrics.load(out).provenance  # the record log_metrics adds fits too
