"""Settings of the universal-neuron blacklist (`blacklist` in the config). No torch here."""

from __future__ import annotations

from pydantic import Field

from circuitlab.tasks.neutral import NEUTRAL_PROMPTS
from circuitlab.types import StrictModel


class BlacklistConfig(StrictModel):
    """Universal neurons: in the top-k |activation| at the last position of most prompts."""

    prompts: list[str] = Field(
        default_factory=lambda: list(NEUTRAL_PROMPTS),
        min_length=20,
        description="diverse prompts unrelated to the tasks (>= 20); the default uses the toy "
        "model's filler vocabulary — give your own for a real model",
    )
    top_k: int = Field(default=50, ge=1, description="top-k |activation| per layer and prompt")
    threshold_fraction: float = Field(
        default=0.8, gt=0, le=1, description="share of prompts a neuron must be in the top-k of"
    )
    batch_size: int = Field(default=32, ge=1)
