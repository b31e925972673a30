"""``data/metrics/robustness/{model}.json``: the report's verdicts on each training seed of a
toy model and how many seeds agree (`circuitlab.robustness.verdicts.agreement`). No torch."""

from __future__ import annotations

from typing import ClassVar

from circuitlab.artifact import Metrics
from circuitlab.types import StrictModel


class Spread(StrictModel):
    mean: float | None
    sd: float | None
    min: float | None
    max: float | None


class SeedVerdict(StrictModel):
    """One verdict over the seeds: each seed's value (yes/no, or a method's name; null where
    that seed's run has no such verdict) and figure, the majority, the agreeing seeds."""

    values: dict[str, bool | str | None]
    figures: dict[str, float | None]
    majority: bool | str | None
    agree: int
    robust: bool
    spread: Spread


class RobustnessSummary(Metrics):
    RULE: ClassVar[str] = "robustness"

    model: str
    models: dict[str, str]  # seed → the model trained with it
    min_accuracy: float
    n_verdicts: int
    n_robust: int
    verdicts: dict[str, SeedVerdict]

    @property
    def seeds(self) -> list[str]:
        """The training seeds, in numeric order (the keys of `models`)."""
        return sorted(self.models, key=int)
