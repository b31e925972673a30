"""ACDC's edge orders (circuitlab's and auto-circuit's) and the per-edge trace."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from circuitlab.acdc import SweepConfig, acdc_order, build_graph, sequential_acdc
from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit
from circuitlab.acdc.fast import FastConfig, fast_acdc
from circuitlab.acdc.trace import EdgeTrace, near_tau
from circuitlab.errors import ArtifactError, ConfigError
from circuitlab.models.adapters import ModelDims


def dims(layers: int = 2, heads: int = 4, kv: int = 2) -> ModelDims:
    return ModelDims(
        n_layers=layers,
        d_model=16,
        n_heads=heads,
        n_kv_heads=kv,
        head_dim=4,
        d_mlp=32,
        vocab_size=50,
    )


def test_autocircuit_order_is_head_by_head_latest_source_first() -> None:
    graph = build_graph(dims())
    order = [graph.edges[i] for i in acdc_order(graph, "autocircuit")]
    assert sorted(order) == sorted(graph.edges)
    # into Resid End first, latest source first
    assert (
        order[0] == "MLP 1->Resid End" and order[len(graph.sources) - 1] == "Resid Start->Resid End"
    )
    # block 1's attention inputs: head by head, Q then K then V (K/V of KV head g beside head g)
    attn1 = [e.split("->")[1] for e in order if e.split("->")[1].startswith("A1.")]
    dests = list(dict.fromkeys(attn1))
    assert dests == ["A1.0.Q", "A1.0.K", "A1.0.V", "A1.1.Q", "A1.1.K", "A1.1.V", "A1.2.Q", "A1.3.Q"]
    first = [e for e in order if e.endswith("->A1.0.Q")]
    assert first == ["MLP 0->A1.0.Q", "A0.3->A1.0.Q", "A0.2->A1.0.Q", "A0.1->A1.0.Q",
                     "A0.0->A1.0.Q", "Resid Start->A1.0.Q"]  # fmt: skip
    # destination graph layers never increase, in either order
    for name in ("circuitlab", "autocircuit"):
        layers = graph.edge_graph_layer[acdc_order(graph, name)].tolist()
        assert layers == sorted(layers, reverse=True)
    with pytest.raises(ConfigError, match="autocircuit"):
        acdc_order(graph, "random")
    with pytest.raises(ConfigError, match="edge_order"):
        SweepConfig(edge_order="backwards")


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel"])
def test_orders_are_exact_and_traced(arch: str, make_ctx: Callable) -> None:
    pm, ctx = make_ctx(arch, "resample")
    for edge_order in ("circuitlab", "autocircuit"):
        cfg = SweepConfig(tao_bases=(1,), tao_exps=(-3, -1), edge_order=edge_order)
        slow = sequential_acdc(ctx, cfg)
        fast = fast_acdc(ctx, cfg, FastConfig(window=4))
        assert fast.scores == slow.scores and fast.edge_order == edge_order
        for r_slow, r_fast in zip(slow.per_tau, fast.per_tau, strict=True):
            a, b = r_slow.trace, r_fast.trace
            assert a is not None and b is not None
            # one check per edge, in the order's sequence; the same decisions
            assert list(a.edge) == acdc_order(pm.graph, edge_order) == list(b.edge)
            assert a.removed == b.removed
            assert b.faithfulness == pytest.approx(a.faithfulness, rel=1e-4, abs=1e-6)
            check_trace(a, r_slow.tau, r_slow.kept, pm.graph.edges, r_slow.faithfulness)
            assert r_slow.n_near_tau == a.n_near_tau
    off = sequential_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-2,), trace=False))
    assert off.per_tau[0].trace is None
    assert off.to_json()["taus"][0]["trace"] is None


def check_trace(
    trace: EdgeTrace, tau: float, kept: tuple[str, ...], edges: tuple[str, ...], final: float
) -> None:
    """The trace explains the circuit: removed = Δ < τ, the baseline follows the removals,
    the kept edges are exactly those not removed."""
    baseline = 0.0
    for _e, b, f, removed, near in zip(
        trace.edge, trace.baseline, trace.faithfulness, trace.removed, trace.near_tau,
        strict=True,
    ):  # fmt: skip
        assert b == baseline
        assert removed == (f - b < tau)
        assert near == near_tau(f, b, tau)
        if removed:
            baseline = f
    assert baseline == final
    removed_edges = {edges[e] for e, r in zip(trace.edge, trace.removed, strict=True) if r}
    assert removed_edges == set(edges) - set(kept)
    rows = trace.rows(edges, tau)
    assert rows[0]["margin"] == pytest.approx(trace.delta[0] - tau)


def test_near_tau_flags_rounding_distance_only() -> None:
    assert near_tau(0.01 + 1e-12, 0.0, 0.01)
    assert not near_tau(0.0101, 0.0, 0.01)
    assert near_tau(1.0 + 0.01, 1.0, 0.01)  # relative to the values involved


def test_artifact_round_trips_the_trace(make_ctx: Callable) -> None:
    _pm, ctx = make_ctx("LlamaForCausalLM", "resample")
    res = fast_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-2,)))
    r = res.per_tau[0]
    art = CircuitArtifact(
        method="acdc", model="m", task="t", edges=res.edges, scores=res.scores,
        score_kind="prune_tau", n_forward=1, n_backward=0, seconds=0.0, n_prompts=4,
        circuits=(EdgeCircuit("tau=0.01", r.kept, r.tau, r.faithfulness, r.n_near_tau, r.trace),),
    )  # fmt: skip
    back = CircuitArtifact.from_json(art.to_json())
    assert back == art and back.circuits[0].trace == r.trace
    bad = art.to_json()
    bad["circuits"][0]["trace"]["edge"][0] = len(res.edges)
    with pytest.raises(ArtifactError, match="trace edge index"):
        CircuitArtifact.from_json(bad)
    bad["circuits"][0]["trace"]["removed"].pop()
    with pytest.raises(ArtifactError, match="differ in length"):
        CircuitArtifact.from_json(bad)
