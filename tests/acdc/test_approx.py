"""Approximate ACDC: window (d1) and group testing (d2), and the agreement they report."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from circuitlab.acdc import ACDCConfig, sequential_acdc
from circuitlab.acdc.approx import ApproxConfig, approx_acdc, decision_agreement
from circuitlab.acdc.sequential import ACDCResult, TauResult
from circuitlab.errors import ConfigError

SWEEP = ACDCConfig(tao_bases=(1, 5), tao_exps=(-4, -2, 0))


def test_window_of_one_is_sequential_acdc(make_ctx: Callable) -> None:
    _, ctx = make_ctx("LlamaForCausalLM", "resample")
    slow = sequential_acdc(ctx, SWEEP)
    d1 = approx_acdc(ctx, SWEEP, ApproxConfig("window", 1))
    assert d1.scores == slow.scores
    assert d1.n_forward == slow.n_forward  # one evaluation per edge, nothing extra
    assert decision_agreement(d1, slow)["overall"] == 1.0


@pytest.mark.parametrize("variant", ["window", "group"])
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
    assert data["method"] == ("acdc_approx" if variant == "group" else "acdc_window")


def test_group_testing_clears_unimportant_edges_in_few_evaluations(make_ctx: Callable) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    cfg = ACDCConfig(tao_bases=(1,), tao_exps=(0,))  # a large τ: almost nothing matters
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
    [({"window": 0}, "≥ 1"), ({"variant": "bisect"}, "'window' or 'group'")],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ApproxConfig(**kwargs)
