"""DVC's view of a run is each stage's headline (circuitlab.tracking.headline): a few values,
flat, under data/summary/ beside the full metrics file the report reads."""

from __future__ import annotations

import json
from pathlib import Path

from circuitlab import tracking
from circuitlab.tracking.headline import HEADLINES, headline, summary_path


def test_the_summary_sits_under_summary_where_the_metrics_sit_under_metrics() -> None:
    assert summary_path("data/metrics/evaluate_model/toy/ioi.json") == Path(
        "data/summary/evaluate_model/toy/ioi.json"
    )
    assert summary_path("/w/data/metrics/x.json") == Path("/w/data/summary/x.json")
    assert summary_path("out/m.json") is None  # outside the pipeline's layout: no summary
    assert summary_path("data/x/metrics.json") is None  # a file named metrics is no folder


def test_headline_takes_the_named_values_and_one_column_per_wildcard_match() -> None:
    metrics = {
        "methods": {
            "acdc": {"reference": {"recovery": 0.9}},
            "eap": {"reference": {"recovery": 0.2}},
        },
        "n_edges": 19,
    }
    assert headline("acdc_evaluate", metrics) == {"acdc_recovery": 0.9, "eap_recovery": 0.2}
    assert headline("evaluate_model", {"test": {"accuracy": 1.0}}) == {"test_accuracy": 1.0}
    assert headline("no_such_stage", metrics) == {}


def test_log_metrics_writes_the_summary_beside_the_metrics(tmp_path: Path) -> None:
    out = tmp_path / "data" / "metrics" / "evaluate_model" / "m" / "t.json"
    tracking.log_metrics(
        "evaluate_model",
        {"test": {"accuracy": 0.5, "logit_diff": 1.0, "n": 4}, "train": {"accuracy": 1.0}},
        out,
    )
    summary = json.loads((tmp_path / "data/summary/evaluate_model/m/t.json").read_text())
    assert summary == {"test_accuracy": 0.5, "test_logit_diff": 1.0, "train_accuracy": 1.0}
    assert "provenance" in json.loads(out.read_text())  # the full file keeps its record


def test_every_pipeline_stage_has_a_headline() -> None:
    from circuitlab.config import load_config
    from circuitlab.jobs import pipeline_jobs
    from pipeline_support import TINY

    seeds = {**TINY, "robustness": {"model": "tiny", "seeds": [0, 1]}}  # `make robustness`
    rules = {j.rule for j in pipeline_jobs(load_config(seeds))} - {"report", "record"}
    assert rules <= set(HEADLINES), rules - set(HEADLINES)
