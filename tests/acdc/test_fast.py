"""Exact fast ACDC ≡ sequential ACDC: same prune scores and circuits, fewer passes."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from acdc_support import batch_of, pair_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from circuitlab.acdc import SweepConfig, patchable, prepare, sequential_acdc
from circuitlab.acdc.fast import FastConfig, fast_acdc
from circuitlab.errors import ConfigError
from circuitlab.models import load_model
from tiny_models import save_tokenizer


def assert_same(fast, slow) -> None:  # type: ignore[no-untyped-def]
    assert fast.stats.near_tau_decisions == 0  # otherwise a difference would be allowed
    assert fast.scores == slow.scores
    assert [set(r.kept) for r in fast.per_tau] == [set(r.kept) for r in slow.per_tau]
    assert [r.n_removed for r in fast.per_tau] == [r.n_removed for r in slow.per_tau]
    for a, b in zip(fast.per_tau, slow.per_tau, strict=True):
        assert a.faithfulness == pytest.approx(b.faithfulness, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("arch", "ablation", "faithfulness", "window"),
    [
        ("LlamaForCausalLM", "resample", "kl", None),
        ("LlamaForCausalLM", "mean", "mse", 3),
        ("GPT2LMHeadModel", "resample", "kl", 1),
        ("GPT2LMHeadModel", "zero", "kl", None),
        ("MistralForCausalLM", "resample", "mse", 8),
    ],
)
def test_fast_equals_sequential(
    arch: str, ablation: str, faithfulness: str, window: int | None, make_ctx: Callable
) -> None:
    pm, ctx = make_ctx(arch, ablation)
    # τ from "removes almost everything" to "keeps almost everything"
    cfg = SweepConfig(tao_bases=(1, 5), tao_exps=(-5, -3, -1, 1), faithfulness=faithfulness)
    slow = sequential_acdc(ctx, cfg)
    fast = fast_acdc(ctx, cfg, FastConfig(window=window, adaptive=True, share_sweep=False))
    assert_same(fast, slow)
    n_kept = [len(r.kept) for r in slow.per_tau]
    assert min(n_kept) < pm.graph.n_edges // 4 and max(n_kept) >= 10  # both regimes
    assert fast.stats.n_candidates >= len(cfg.taus) * pm.graph.n_edges
    if window != 1:
        assert fast.stats.n_batched < len(cfg.taus) * pm.graph.n_edges


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    layers=st.integers(1, 3),
    kv=st.sampled_from([1, 2, 4]),
    tau_exp=st.integers(-4, 0),
    window=st.one_of(st.none(), st.integers(1, 12)),
    share=st.booleans(),
)
def test_fast_equals_sequential_on_random_models(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    layers: int,
    kv: int,
    tau_exp: int,
    window: int | None,
    share: bool,
) -> None:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=kv,
    )  # fmt: skip
    path = Path(tmp_path_factory.mktemp("rand"))
    LlamaForCausalLM(config).save_pretrained(path)
    save_tokenizer(path)
    lm = load_model(path)
    ctx = prepare(patchable(lm), batch_of(lm, pair_rows(3, seed)), "resample")
    cfg = SweepConfig(tao_bases=(1, 3), tao_exps=(tau_exp,))
    fast = fast_acdc(ctx, cfg, FastConfig(window=window, adaptive=True, share_sweep=share))
    slow = sequential_acdc(ctx, cfg)
    if fast.stats.near_tau_decisions == 0:
        assert_same(fast, slow)


def test_automatic_window_is_one_on_cpu(make_ctx: Callable) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    result = fast_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-3,)))
    assert result.stats.n_batched == pm.graph.n_edges and result.stats.n_wasted == 0


def test_result_json_reports_speculation(make_ctx: Callable) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    result = fast_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-3,)), FastConfig(adaptive=True))
    data = result.to_json()
    assert data["method"] == "acdc_fast"
    assert data["n_candidate_evaluations"] == pm.graph.n_edges + data["n_wasted_evaluations"]
    assert data["n_forward"] == ctx.n_forward + data["n_batched_forward"]


@pytest.mark.parametrize(
    "kwargs", [{"window": 0}, {"window": -2}, {"max_window": 0}, {"start_window": 0}]
)
def test_bad_window_is_a_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="≥ 1"):
        FastConfig(**kwargs)


def distinct_states(runs: list) -> int:  # type: ignore[type-arg]
    """Checks a shared sweep needs, from independent one-τ runs' traces: at each visited edge,
    the number of distinct removal histories among the thresholds."""
    traces = [r.per_tau[0].trace for r in runs]
    return sum(len({t.removed[:i] for t in traces}) for i in range(len(traces[0].edge)))


@pytest.mark.parametrize(
    ("arch", "ablation", "edge_order"),
    [
        ("LlamaForCausalLM", "resample", "circuitlab"),
        ("GPT2LMHeadModel", "zero", "autocircuit"),
        ("Qwen2ForCausalLM", "mean", "circuitlab"),
    ],
)
def test_shared_sweep_equals_one_run_per_tau(
    arch: str, ablation: str, edge_order: str, make_ctx: Callable
) -> None:
    pm, ctx = make_ctx(arch, ablation)
    cfg = SweepConfig(tao_bases=(1, 3, 7), tao_exps=(-4, -3, -2, -1), edge_order=edge_order)
    shared = fast_acdc(ctx, cfg, FastConfig(window=1))
    singles = [
        fast_acdc(ctx, SweepConfig(tao_bases=(tau,), tao_exps=(0,), edge_order=edge_order),
                  FastConfig(window=1))
        for tau in cfg.taus
    ]  # fmt: skip
    for r, single in zip(shared.per_tau, singles, strict=True):
        (one,) = single.per_tau
        # bit-identical: the same single-state forwards, the same decisions and traces
        assert (r.kept, r.n_removed, r.faithfulness, r.trace) == (
            one.kept, one.n_removed, one.faithfulness, one.trace
        )  # fmt: skip
    scores = [
        min((s.scores[i] for s in singles), default=math.inf) for i in range(len(pm.graph.edges))
    ]
    assert list(shared.scores) == scores
    assert_same(shared, sequential_acdc(ctx, cfg))
    # one check per edge and distinct state: exactly what the per-τ traces imply
    n_taus = len(cfg.taus)
    assert shared.stats.n_candidates == distinct_states(singles)
    assert shared.stats.n_checks_unshared == n_taus * pm.graph.n_edges
    assert pm.graph.n_edges <= shared.stats.n_candidates < n_taus * pm.graph.n_edges
    assert shared.n_forward == ctx.n_forward + shared.stats.n_candidates


def test_shared_sweep_batched_groups_agree(make_ctx: Callable) -> None:
    """The accelerator path (the groups of one edge in one forward) run on the CPU."""
    _pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    cfg = SweepConfig(tao_bases=(1, 5), tao_exps=(-4, -3, -2))
    batched = fast_acdc(ctx, cfg, FastConfig(batch_groups=True))
    single = fast_acdc(ctx, cfg, FastConfig(batch_groups=False))
    assert batched.stats.n_batched < single.stats.n_batched
    assert batched.stats.n_candidates == single.stats.n_candidates
    if batched.stats.near_tau_decisions == 0:
        assert batched.scores == single.scores
