"""Settings of a hub model entry (`models.<name>` with `source: hf`) and of the model
evaluation (`evaluation` in the config). No torch here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from circuitlab.models.spec import ModelSpec
from circuitlab.types import StrictModel


class HubModelConfig(ModelSpec):
    """A Hugging Face model by hub id (or local directory) — see `ModelSpec` for the fields."""

    source: Literal["hf"]


class EvaluationConfig(StrictModel):
    batch_size: int = Field(default=64, ge=1)
    min_accuracy: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="fail the evaluate_model rule if any task's test accuracy is below this",
    )
