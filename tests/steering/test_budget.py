"""The side-effect budget of steering verdicts (issue 26): a point outside the budget — a broken
model that moves every metric — is never counted, each direction is judged at its best in-budget
multiplier with a Bonferroni-corrected interval, and a direction with no in-budget multiplier
says so. Built on hand-made per-prompt numbers whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from circuitlab.steering.evaluate import DoseResponse, budget_table, summarize, verdict
from circuitlab.steering.settings import SideEffectBudget
from circuitlab.steering.stages import leakage_matrix

N = 40
RNG = np.random.default_rng(0)


def prompts(mean: float, spread: float = 0.2) -> np.ndarray:
    return mean + spread * RNG.standard_normal(N)


def run(ld: float, kl: float, other_acc: float) -> dict[str, np.ndarray]:
    return {
        "logit_diff": prompts(ld),
        "kl_neutral": np.abs(prompts(kl, 0.01)),
        "leakage/ioi": np.full(N, other_acc),
    }


def dose(points: dict[float, tuple[float, float, float]]) -> DoseResponse:
    """Unsteered at m=1 (logit diff 2, accuracy 1 elsewhere); the control never moves."""
    base = run(2.0, 0.0, 1.0)
    base["kl_neutral"] = np.zeros(N)
    dr = DoseResponse([*sorted(points)], base)
    for m, (ld, kl, acc) in points.items():
        dr.steered[m] = run(ld, kl, acc)
        dr.control[m] = run(2.0, kl / 10, 1.0)
    return dr


def judge(dr: DoseResponse, budget: SideEffectBudget | None = None) -> dict:
    budget = budget or SideEffectBudget()
    metrics = summarize(dr, resamples=500, seed=0)
    return verdict(dr, metrics, "logit_diff", 1.0, budget=budget, min_effect=0.01, resamples=500)


def test_a_broken_model_is_never_counted() -> None:
    # ×8 moves the metric hugely but costs 20 nats of KL; ×0 suppresses but half of another
    # task's prompts fail: neither may count, however large the effect
    dr = dose({0.0: (-5.0, 0.05, 0.5), 1.0: (2.0, 0.0, 1.0), 8.0: (9.0, 20.0, 0.0)})
    v = judge(dr)
    for label in ("suppress", "amplify"):
        arm = v[label]
        assert arm["in_budget"] is False and arm["beats_control"] is False, label
        assert arm["candidates"] == 0
    assert v["suppress"]["accuracy_drop"] == pytest.approx(0.5)
    assert v["amplify"]["kl_neutral"] > 19


def test_each_direction_is_judged_at_its_best_in_budget_multiplier() -> None:
    # amplify: ×2 (+1, in budget) and ×4 (+3, in budget) and ×8 (+7, out): judged at ×4
    dr = dose({1.0: (2.0, 0.0, 1.0), 2.0: (3.0, 0.1, 1.0), 4.0: (5.0, 0.3, 0.98),
               8.0: (9.0, 5.0, 1.0)})  # fmt: skip
    arm = judge(dr)["amplify"]
    assert arm["multiplier"] == 4.0 and arm["beats_control"] and arm["in_budget"]
    assert arm["candidates"] == 2
    assert arm["confidence"] == pytest.approx(1 - 0.05 / 2)  # Bonferroni over the two
    assert arm["delta"]["mean"] == pytest.approx(3.0, abs=0.2)
    # a stricter accuracy budget removes ×4 (2 points lost elsewhere): judged at ×2
    strict = judge(dr, SideEffectBudget(max_accuracy_drop=0.01))["amplify"]
    assert strict["multiplier"] == 2.0 and strict["beats_control"] and strict["candidates"] == 1


def test_an_effect_only_outside_the_budget_does_not_beat() -> None:
    # in budget nothing moves (×2 ≈ unsteered); only the broken ×8 moves: no win, judged at ×2
    dr = dose({1.0: (2.0, 0.0, 1.0), 2.0: (2.0, 0.1, 1.0), 8.0: (9.0, 20.0, 1.0)})
    arm = judge(dr)["amplify"]
    assert arm["multiplier"] == 2.0 and arm["in_budget"] and not arm["beats_control"]


def test_the_budget_table_and_the_summary_count_only_in_budget_wins() -> None:
    dr = dose({0.0: (-5.0, 0.05, 0.5), 1.0: (2.0, 0.0, 1.0), 2.0: (3.0, 0.1, 1.0)})
    metrics = summarize(dr, resamples=200, seed=0)
    table = budget_table(metrics, dr.multipliers, SideEffectBudget())
    assert [c["in_budget"] for c in table["multipliers"].values()] == [False, True, True]
    report = {"name": "t", "method": "lrp", "summary": judge(dr), "leakage": {}}
    counts = leakage_matrix([report])["counts"]
    assert counts["amplify"] == {"rows": 1, "beat": 1, "no_budget": 0}
    assert counts["suppress"] == {"rows": 1, "beat": 0, "no_budget": 1}


def test_the_budget_is_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_kl"):
        SideEffectBudget(max_kl=0)
    with pytest.raises(ValidationError, match="max_accuracy_drop"):
        SideEffectBudget(max_accuracy_drop=1.5)
