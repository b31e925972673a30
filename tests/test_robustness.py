"""Seed robustness (issue 26 §5): the config's seed models, the job graph, and the agreement of
verdicts across seeds — a disagreement, a verdict a seed lacks, the figure's spread."""

from __future__ import annotations

import pytest

from circuitlab.config import load_config
from circuitlab.errors import ConfigError
from circuitlab.jobs import Job, pipeline_jobs
from circuitlab.robustness.verdicts import agreement
from pipeline_support import TINY


def test_the_config_gains_one_model_per_other_seed() -> None:
    cfg = load_config({**TINY, "robustness": {"model": "tiny", "seeds": [0, 3, 7]}}, where="t")
    assert list(cfg.active_models()) == ["tiny", "tiny-seed3", "tiny-seed7"]
    assert cfg.seed_models() == {0: "tiny", 3: "tiny-seed3", 7: "tiny-seed7"}
    base, other = cfg.model("tiny"), cfg.model("tiny-seed7")
    assert other.training.seed == 7  # type: ignore[union-attr]
    # only the seed differs: architecture, corpus and the rest of the schedule are the same
    dump = other.model_dump()
    dump["training"]["seed"] = base.training.seed  # type: ignore[union-attr]
    assert dump == base.model_dump()
    jobs = pipeline_jobs(cfg)
    assert Job.of("robustness", model="tiny") in jobs
    assert sum(j.rule == "train_toy_model" for j in jobs) == 3
    assert load_config(TINY, where="t").seed_models() == {}
    # the extra seeds are judged by the accuracy gate, not stopped by it; the model itself is
    assert cfg.accuracy_gate("tiny") == cfg.evaluation.min_accuracy
    assert cfg.accuracy_gate("tiny-seed3") == 0.0


def test_a_seed_model_disabled_by_name_stays_disabled() -> None:
    raw = {**TINY, "models": {**TINY["models"], "tiny-seed1": None},
           "robustness": {"model": "tiny", "seeds": [0, 1, 2]}}  # fmt: skip
    cfg = load_config(raw, where="t")
    assert list(cfg.active_models()) == ["tiny", "tiny-seed2"]


@pytest.mark.parametrize(
    ("robustness", "message"),
    [
        ({"model": "nope"}, "must be an enabled toy model"),
        ({"model": "tiny", "seeds": [1, 1]}, "duplicates"),
        ({"model": "tiny", "seeds": [1]}, "at least 2"),
    ],
)
def test_bad_robustness_settings_are_named(robustness: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**TINY, "robustness": robustness}, where="t")


def test_agreement_counts_seeds_and_spreads_figures() -> None:
    yes, no = {"value": True, "figure": 1.0}, {"value": False, "figure": -1.0}
    per_seed = {
        0: {"a": yes, "b": yes, "c": {"value": "caa", "figure": 0.1}},
        1: {"a": {"value": True, "figure": 3.0}, "b": no, "c": {"value": "caa", "figure": 0.3}},
        2: {"a": {"value": True, "figure": 2.0}, "b": yes},  # seed 2 has no verdict c
    }
    out = agreement(per_seed)
    a, b, c = (out["verdicts"][k] for k in "abc")
    assert a["robust"] and a["agree"] == 3 and a["majority"] is True
    assert a["spread"] == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0}
    assert not b["robust"] and b["agree"] == 2 and b["majority"] is True
    assert b["values"] == {"0": True, "1": False, "2": True}
    assert not c["robust"] and c["agree"] == 2 and c["majority"] == "caa"
    assert c["values"]["2"] is None
    assert out["n_verdicts"] == 3 and out["n_robust"] == 1 and out["seeds"] == [0, 1, 2]
