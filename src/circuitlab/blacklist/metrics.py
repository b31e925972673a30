"""The blacklist stage's metrics file as a typed model (`circuitlab.artifact.Metrics`). No torch."""

from __future__ import annotations

from typing import ClassVar

from circuitlab.artifact import Metrics


class BlacklistMetrics(Metrics):
    """``data/metrics/blacklist/{model}.json``: the blacklist's size (all, detected, known
    from prior work), per layer, the prompts it was detected on and its split-half stability."""

    RULE: ClassVar[str] = "blacklist"

    n_neurons: int
    n_detected: int
    n_known: int
    n_prompts: int
    stability: float | None
    per_layer: dict[str, int]
