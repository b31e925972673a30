"""The edge-circuit stages' metrics files as typed models (`circuitlab.artifact.Metrics`): one
discovery run's counts (``acdc_circuit``) and the evaluation of every method's circuits on the
test prompts (``acdc_evaluate``). No torch."""

from __future__ import annotations

from typing import ClassVar

from circuitlab.artifact import Metrics
from circuitlab.types import StrictModel


class DiscoveredCircuit(StrictModel):
    label: str
    tau: float | None
    n_kept: int
    metric: float | None  # the discovery metric the circuit reached on the train prompts


class DiscoveryMetrics(Metrics):
    """``data/metrics/acdc_circuit/{model}/{task}/{method}.json``: one discovery run's counts
    (`circuitlab.acdc.discover.circuit_metrics`); ``details`` are the method's own scalars."""

    RULE: ClassVar[str] = "acdc_circuit"

    method: str
    n_edges: int
    n_prompts: int
    n_prompts_available: int | None
    seconds: float
    n_forward: int
    n_backward: int
    circuits: dict[str, DiscoveredCircuit]  # "00", "01", … in the artifact's order
    details: dict[str, int | float | str | bool]


class RandomControl(StrictModel):
    """Random edge sets of a circuit's size: mean and 95 % t half-width of KL and recovery."""

    kl_mean: float | None
    kl_ci: float | None
    recovery_mean: float | None
    recovery_ci: float | None


class CircuitScore(StrictModel):
    """One circuit of a method on the test prompts (`circuitlab.acdc.evaluate`)."""

    label: str
    tau: float | None
    n_edges: int
    fraction: float
    kl: float | None
    recovery: float | None
    random: RandomControl


class MethodScores(StrictModel):
    seconds: float
    n_forward: int
    circuits: dict[str, CircuitScore]  # "00", "01", … in the artifact's order
    reference: CircuitScore
    rendered: bool | None = None  # whether Graphviz drew the reference circuit's PNG


class Agreement(StrictModel):
    reference_method: str | None
    jaccard: dict[str, float | None]  # "a_vs_b" → Jaccard of the reference circuits
    jaccard_over_taus: dict[str, float | None]
    roc_auc: dict[str, float | None]  # method → ROC AUC against the reference ACDC circuit

    def pair(self, a: str, b: str) -> float | None:
        """Jaccard of two methods' reference circuits, in either order (None if not computed)."""
        return self.jaccard.get(f"{a}_vs_{b}", self.jaccard.get(f"{b}_vs_{a}"))


class MibMethodCurve(StrictModel):
    """One method on MIB's yardstick (`circuitlab.acdc.mib`): CPR from the signed ranking's
    faithfulness curve, CMD from the |score| ranking's, both curves and the pruned sizes."""

    cpr: float | None
    cmd: float | None
    faithfulness_signed: dict[str, float | None]  # "00" … "09": MIB's sizes, in `sizes` order
    faithfulness_abs: dict[str, float | None]
    n_kept_signed: dict[str, int]  # edges kept after pruning
    n_kept_abs: dict[str, int]


class MibRandom(StrictModel):
    """Random edge sets at MIB's sizes: mean and 95 % t half-width over the seeds."""

    cpr_mean: float | None
    cpr_ci: float | None
    cmd_mean: float | None
    cmd_ci: float | None
    faithfulness_mean: dict[str, float | None]
    faithfulness_ci: dict[str, float | None]


class MibSize(StrictModel):
    percent: float  # of the graph's edges
    n_requested: int  # int(p · E), before pruning


class MibCurves(StrictModel):
    sizes: dict[str, MibSize]  # "00" … "09"
    methods: dict[str, MibMethodCurve]
    random: MibRandom

    def by_cpr(self) -> list[str]:
        """The methods, best CPR first (without one last)."""
        cpr = {m: c.cpr for m, c in self.methods.items()}
        known = sorted((m for m, v in cpr.items() if v is not None), key=lambda m: -(cpr[m] or 0))
        return [*known, *(m for m, v in cpr.items() if v is None)]


class EdgeEvaluation(Metrics):
    """``data/metrics/acdc_evaluate/{model}/{task}.json``: every method's circuits on the test
    prompts (KL and logit-difference recovery against random edge sets) and their agreement."""

    RULE: ClassVar[str] = "acdc_evaluate"

    reference_tau: float
    n_edges: int
    n_prompts: int
    n_prompts_available: int
    ablation: str
    ld_clean: float | None
    ld_ablated: float | None
    kl_ablated: float | None
    methods: dict[str, MethodScores]
    agreement: Agreement
    mib: MibCurves | None = None  # absent in files written before MIB's yardstick
