"""The metrics files of the model stages, as typed models (`circuitlab.artifact.Metrics`): the
toy model's training and a task's accuracy. No torch."""

from __future__ import annotations

from typing import ClassVar

from circuitlab.artifact import Metrics
from circuitlab.types import StrictModel


class TrainingMetrics(Metrics):
    """``data/metrics/train_toy_model/{model}.json``."""

    RULE: ClassVar[str] = "train_toy_model"

    final_loss: float | None
    train_seconds: float
    corpus_sentences: int
    n_parameters: int
    vocab_size: int


class SplitScores(StrictModel):
    """One split's scores (`circuitlab.models.evaluate.score_rows`)."""

    accuracy: float | None
    logit_diff: float | None
    pairwise_accuracy: float | None
    n: int


class EvaluationMetrics(Metrics):
    """``data/metrics/evaluate_model/{model}/{task}.json``: the test split (what the accuracy
    gate reads) and the train split, for contrast."""

    RULE: ClassVar[str] = "evaluate_model"

    train: SplitScores
    test: SplitScores
