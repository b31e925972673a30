"""What the τ-sweep methods share: the keys they read and their artifact fields. No torch at
import."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circuitlab.acdc.sequential import ACDCResult, SweepConfig
    from circuitlab.acdc.settings import AcdcConfig

#: the section-level `acdc` keys every τ-sweep method reads
SWEEP_KEYS: tuple[str, ...] = ("faithfulness", "tao_bases", "tao_exps", "edge_order")


def sweep_config(cfg: AcdcConfig, *, trace: bool = False) -> SweepConfig:
    from circuitlab.acdc.sequential import SweepConfig

    return SweepConfig(
        tao_bases=tuple(cfg.tao_bases),
        tao_exps=tuple(cfg.tao_exps),
        faithfulness=cfg.faithfulness,
        edge_order=cfg.edge_order,
        trace=trace,
    )


def from_sweep(result: ACDCResult) -> dict[str, Any]:
    """A τ sweep's artifact fields: one circuit per τ, prune scores."""
    from circuitlab.acdc.artifact import EdgeCircuit

    raw = result.to_json()
    drop = ("scores", "taus", "method", "n_edges", "n_forward", "seconds")
    details = {k: v for k, v in raw.items() if k not in drop}
    circuits = tuple(
        EdgeCircuit(f"tau={r.tau:g}", r.kept, r.tau, r.faithfulness, r.n_near_tau, r.trace)
        for r in result.per_tau
    )
    return {
        "scores": result.scores,
        "score_kind": "prune_tau",
        "circuits": circuits,
        "n_forward": result.n_forward,
        "n_backward": 0,
        "metric_values": {f"faithfulness_tau={r.tau:g}": r.faithfulness for r in result.per_tau},
        "details": details,
    }
