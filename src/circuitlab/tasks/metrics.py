"""The dataset stages' metrics files as typed models (`circuitlab.artifact.Metrics`). No torch."""

from __future__ import annotations

from typing import ClassVar

from circuitlab.artifact import Metrics
from circuitlab.tasks.tokencheck import TokenCheckReport


class DatasetMetrics(Metrics):
    """``data/metrics/datasets/{task}.json``: rows written, by split."""

    RULE: ClassVar[str] = "datasets"

    n_rows: int
    n_train: int
    n_test: int


class TokenCheckMetrics(Metrics, TokenCheckReport):
    """``data/metrics/check_dataset/{model}/{task}.json``: the tokenizer check of a task's rows,
    `circuitlab.tasks.tokencheck.TokenCheckReport` as written."""

    RULE: ClassVar[str] = "check_dataset"
