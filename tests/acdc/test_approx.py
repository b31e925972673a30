"""Approximate ACDC: window (d1), group testing (d2), gradient-guided groups, and the agreement
they report."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from circuitlab.acdc import SweepConfig, sequential_acdc
from circuitlab.acdc.approx import ApproxConfig, approx_acdc, decision_agreement
from circuitlab.acdc.sequential import ACDCResult, TauResult
from circuitlab.errors import ConfigError

SWEEP = SweepConfig(tao_bases=(1, 5), tao_exps=(-4, -2, 0))


def test_window_of_one_is_sequential_acdc(make_ctx: Callable) -> None:
    _, ctx = make_ctx("LlamaForCausalLM", "resample")
    slow = sequential_acdc(ctx, SWEEP)
    d1 = approx_acdc(ctx, SWEEP, ApproxConfig("window", 1))
    assert d1.scores == slow.scores
    assert d1.n_forward == slow.n_forward  # one evaluation per edge, nothing extra
    assert decision_agreement(d1, slow)["overall"] == 1.0


@pytest.mark.parametrize("variant", ["window", "group", "guided"])
def test_approximations_are_valid_and_report_agreement(variant: str, make_ctx: Callable) -> None:
    pm, ctx = make_ctx("GPT2LMHeadModel", "resample")
    slow = sequential_acdc(ctx, SWEEP)
    fast = approx_acdc(ctx, SWEEP, ApproxConfig(variant, 8))  # type: ignore[arg-type]
    n = pm.graph.n_edges
    for r in fast.per_tau:
        assert r.n_removed + len(r.kept) == n
    agreement = decision_agreement(fast, slow)
    assert 0.5 <= agreement["overall"] <= 1.0
    assert set(agreement["per_tau"]) == {f"{t:g}" for t in SWEEP.taus}
    data = fast.to_json()
    assert data["method"] == ("acdc_window" if variant == "window" else "acdc_approx")
    assert data["variant"] == variant


def test_group_testing_clears_unimportant_edges_in_few_evaluations(make_ctx: Callable) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    cfg = SweepConfig(tao_bases=(1,), tao_exps=(0,))  # a large τ: almost nothing matters
    slow = sequential_acdc(ctx, cfg)
    d2 = approx_acdc(ctx, cfg, ApproxConfig("group", 16))
    assert d2.n_evaluations < pm.graph.n_edges / 4
    assert d2.n_forward - ctx.n_forward < (slow.n_forward - ctx.n_forward) / 4
    assert decision_agreement(d2, slow)["overall"] > 0.9


def test_decision_agreement_by_hand() -> None:
    edges = ("a", "b", "c", "d")
    one = ACDCResult(edges, (1.0,) * 4, (TauResult(0.1, ("a", "b"), 2, 0.0),), "kl", "zero", 0, 0)
    two = ACDCResult(edges, (1.0,) * 4, (TauResult(0.1, ("b", "c"), 2, 0.0),), "kl", "zero", 0, 0)
    got = decision_agreement(one, two)
    assert got["overall"] == pytest.approx(0.5)  # a and c differ
    assert got["jaccard"] == pytest.approx(1 / 3)  # {b} / {a, b, c}
    assert got["per_tau"]["0.1"]["agreement"] == pytest.approx(0.5)
    other = ACDCResult(("a",), (1.0,), (TauResult(0.1, (), 1, 0.0),), "kl", "zero", 0, 0)
    with pytest.raises(ConfigError, match="same edges"):
        decision_agreement(one, other)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "≥ 1"),
        ({"variant": "bisect"}, "'window', 'group', 'guided'"),
        ({"ig_steps": 1}, "ig_steps must be an integer ≥ 2"),
        ({"risk": 0.0}, "risk must be positive"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ApproxConfig(**kwargs)


def test_guided_groups_follow_the_estimate() -> None:
    from circuitlab.acdc.approx import _guided_groups

    order = list(range(10))
    block = [0] * 6 + [1] * 4
    est = [0.0, 0.1, 0.5, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0]
    # budget 0.4: edge 2 alone (0.5 ≥ 0.4); 4 and 5 cannot share (0.6); blocks never mix;
    # at most 3 edges a group
    got = _guided_groups(order, block, est, budget=0.4, size=3)
    assert got == [[0, 1], [2], [3, 4], [5], [6, 7, 8], [9]]


def test_guided_group_testing_checks_important_edges_alone(make_ctx: Callable) -> None:
    """Near exact where it matters, cheap where nothing does: with a generous budget on a
    large τ it clears the graph in few evaluations; its decisions stay close to exact ACDC."""
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    slow = sequential_acdc(ctx, SWEEP)
    guided = approx_acdc(ctx, SWEEP, ApproxConfig("guided", window=64, risk=0.5))
    assert decision_agreement(guided, slow)["overall"] >= 0.9
    assert guided.n_evaluations < len(SWEEP.taus) * pm.graph.n_edges
