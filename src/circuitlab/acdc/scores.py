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
