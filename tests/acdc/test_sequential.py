"""Sequential ACDC equals auto-circuit's loop written plainly; config validation; artifacts."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

import circuitlab.acdc.sequential as sequential_module
from circuitlab.acdc import SweepConfig, sequential_acdc
from circuitlab.errors import ConfigError
from reference.acdc import reference_acdc

SWEEP = SweepConfig(tao_bases=(1, 3), tao_exps=(-4, -3))


@pytest.mark.parametrize(
    ("arch", "faithfulness"),
    [("LlamaForCausalLM", "kl"), ("LlamaForCausalLM", "mse"), ("GPT2LMHeadModel", "kl")],
)
def test_matches_plain_reference(
    arch: str, faithfulness: str, make_ctx: Callable[..., tuple]
) -> None:
    pm, ctx = make_ctx(arch, "resample")
    cfg = SweepConfig(SWEEP.tao_bases, SWEEP.tao_exps, faithfulness)  # type: ignore[arg-type]
    result = sequential_acdc(ctx, cfg)
    ref_scores, ref_kept = reference_acdc(ctx, cfg.taus, faithfulness)
    assert list(result.scores) == ref_scores
    assert [set(r.kept) for r in result.per_tau] == ref_kept
    assert any(0 < len(r.kept) < pm.graph.n_edges for r in result.per_tau)  # non-trivial
    assert any(math.isinf(s) for s in result.scores) and any(
        math.isfinite(s) for s in result.scores
    )
    assert result.n_forward == ctx.n_forward + len(cfg.taus) * pm.graph.n_edges
    for r in result.per_tau:
        assert r.n_removed + len(r.kept) == pm.graph.n_edges


def test_resume_is_used_and_changes_nothing(
    make_ctx: Callable[..., tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ctx = make_ctx("LlamaForCausalLM", "resample")
    starts: list[int] = []
    real = sequential_module.forward

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(kwargs.get("start_layer", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(sequential_module, "forward", spy)
    fast = sequential_acdc(ctx, SWEEP)
    assert max(starts) == ctx.graph.n_layers and min(starts) == 0
    slow = sequential_acdc(ctx, SweepConfig(SWEEP.tao_bases, SWEEP.tao_exps, resume=False))
    assert fast.scores == slow.scores


def test_taus_follow_auto_circuit() -> None:
    assert SweepConfig().taus[:4] == (1e-5, 1e-4, 1e-3, 1e-2)
    assert len(SweepConfig().taus) == 20
    assert SweepConfig(tao_bases=(3,), tao_exps=(-2,)).taus == (3 * 10**-2,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tao_bases": (0,)},
        {"tao_bases": (-1,)},
        {"tao_bases": (float("inf"),)},
        {"tao_bases": (float("nan"),)},
        {"tao_bases": ()},
        {"faithfulness": "l1"},
    ],
)
def test_bad_config_is_a_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SweepConfig(**kwargs)


def test_result_json(make_ctx: Callable[..., tuple]) -> None:
    pm, ctx = make_ctx("LlamaForCausalLM", "zero")
    result = sequential_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-3,)))
    data = json.loads(json.dumps(result.to_json()))
    assert data["method"] == "acdc" and data["ablation"] == "zero"
    assert set(data["scores"]) == set(pm.graph.edges)
    assert data["taus"][0]["tau"] == 1e-3
    assert data["n_forward"] == result.n_forward and data["seconds"] > 0
