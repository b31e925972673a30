"""The dataset stages' metrics files as typed models (`circuitlab.artifact.Metrics`). No torch."""

from __future__ import annotations

from typing import ClassVar

from circuitlab.artifact import Metrics


class DatasetMetrics(Metrics):
    """``data/metrics/datasets/{task}.json``: rows written, by split."""

    RULE: ClassVar[str] = "datasets"

    n_rows: int
    n_train: int
    n_test: int


class TokenCheckMetrics(Metrics):
    """``data/metrics/check_dataset/{model}/{task}.json``: the tokenizer check of a task's rows
    (`circuitlab.tasks.tokencheck.TokenCheckReport`)."""

    RULE: ClassVar[str] = "check_dataset"

    task: str
    tokenizer: str
    n_rows: int
    n_kept: int
    n_dropped: int
    reasons: dict[str, int]
    offending: dict[str, str]
