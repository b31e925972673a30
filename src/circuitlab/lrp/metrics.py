"""The metrics files of the LRP stages, as typed models (`circuitlab.artifact.Metrics`): a
circuit's selection numbers and its faithfulness (ablation curves against random controls,
calibration against single-neuron ablations). No torch."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, model_validator

from circuitlab.artifact import Metrics
from circuitlab.types import StrictModel


class LrpCircuitMetrics(Metrics):
    """``data/metrics/lrp_circuit/{model}/{task}.json`` (`circuitlab.lrp.discover`)."""

    RULE: ClassVar[str] = "lrp_circuit"

    n_neurons: int
    n_prompts: int
    n_positions: int
    share_of_all_neurons: float | None
    share_of_total_attribution: float | None
    metric_mean: float | None
    attribution_sum: float | None
    blacklisted: int
    attribution_seconds: float
    neurons_per_layer: dict[str, int]


class CurvePoint(StrictModel):
    """One circuit size of an ablation curve: the circuit's faithfulness and removal drop
    against the mean and 95 % half-width of random circuits of the same size."""

    size: float
    n_neurons: int
    faithfulness: float | None
    removal_drop: float | None
    metric_keep: float | None
    metric_removed: float | None
    random_faithfulness: float | None
    random_faithfulness_ci: float | None
    random_removal_drop: float | None
    random_removal_drop_ci: float | None
    margin: float | None
    beats_random: bool


class AblationCurve(StrictModel):
    """One ablation's curve over circuit sizes (keys: the size, ``f"{size:g}"``)."""

    metric_none: float | None
    curve: dict[str, CurvePoint]
    area: float | None
    random_area: float | None
    smallest_size_reaching_target: float | None
    sizes_beating_random: int

    def points(self) -> list[CurvePoint]:
        """The curve's points by size."""
        return sorted(self.curve.values(), key=lambda p: p.size)


class Bounds(StrictModel):
    lo: float
    hi: float


class Calibration(StrictModel):
    """Spearman ρ of each attribution variant (``grad_x_act``, ``lrp_<rule>``: the extra
    fields) against measured single-neuron ablation effects, with a bootstrap interval over the
    sampled neurons (``interval``: its ``kind`` and each variant's bounds, or null)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    n_neurons: int
    sampling: str
    interval: dict[str, Bounds | str | None]

    @model_validator(mode="after")
    def _variants(self) -> Calibration:
        for name, rho in (self.model_extra or {}).items():
            if rho is not None and not isinstance(rho, int | float):
                raise ValueError(f"{name}: a Spearman ρ must be a number or null, got {rho!r}")
        for name, bounds in self.interval.items():
            if name == "kind":
                if not isinstance(bounds, str):
                    raise ValueError("interval.kind must say what the interval is")
            elif name not in (self.model_extra or {}):
                raise ValueError(f"interval.{name}: no such attribution variant")
            elif isinstance(bounds, str):
                raise ValueError(f"interval.{name}: expected {{lo, hi}} or null")
        return self

    def rho(self) -> dict[str, float | None]:
        """Variant → ρ, in the file's order."""
        return dict(self.model_extra or {})

    def bounds(self, variant: str) -> Bounds | None:
        found = self.interval.get(variant)
        return found if isinstance(found, Bounds) else None


class FaithfulnessMetrics(Metrics):
    """``data/metrics/lrp_faithfulness/{model}/{task}.json`` (`circuitlab.lrp.faithfulness`)."""

    RULE: ClassVar[str] = "lrp_faithfulness"

    metric: str
    metric_full: float | None
    n_test_prompts: int
    n_cells: int
    grid: dict[str, int]
    ablations: dict[str, AblationCurve]
    target_faithfulness: float
    calibration: Calibration


class LrpAttributionMetrics(Metrics):
    """``data/metrics/lrp_attribution/{model}/{task}.json`` (`circuitlab.lrp.discover`)."""

    RULE: ClassVar[str] = "lrp_attribution"

    n_prompts: int
    n_positions: int
    blacklisted: int
    attribution_seconds: float


class ContrastiveMetrics(Metrics):
    """``data/metrics/contrastive_circuit/{model}/{behaviour}.json``."""

    RULE: ClassVar[str] = "contrastive_circuit"

    n_neurons: int
    n_prompts: int
    max_abs_difference: float | None
    neurons_per_layer: dict[str, int]
