"""Settings of the CAA ↔ circuit comparison (`compare` in the config). No torch here."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from circuitlab.tasks.neutral import NEUTRAL_PROMPTS
from circuitlab.types import StrictModel

CompareVector = Literal["resid", "mlp_out", "neuron_diff", "activation_weighted"]


class CompareConfig(StrictModel):
    """CAA vectors vs neuron circuits, per behaviour (`circuitlab compare`)."""

    circuits: list[Literal["lrp", "contrastive"]] = Field(
        default_factory=lambda: ["lrp", "contrastive"],
        min_length=1,
        description="circuits compared with the vectors (data/circuits/{model}/{behaviour}/"
        "{name}.json); note the contrastive circuit is by construction the top |neuron_diff|",
    )
    vectors: list[CompareVector] = Field(
        default_factory=lambda: ["resid", "mlp_out", "neuron_diff", "activation_weighted"],
        min_length=1,
        description="CAA vectors whose neurons are compared (residual-space ones are projected "
        "on the W_down columns, the seed's decompose_cv_to_neurons)",
    )
    top_k: int = Field(default=50, ge=1, description="top-k vector neurons per layer (seed: 50)")
    top_n: int = Field(default=50, ge=1, description="global top-n overlap (seed: top-50)")
    permutations: int = Field(
        default=1000, ge=99, description="random neuron sets (circuit's per-layer sizes) per null"
    )
    sparsity: list[int] = Field(
        default_factory=lambda: [1, 2, 5, 10, 20, 50, 100],
        min_length=1,
        description="numbers of neurons for the sparse non-negative decomposition (R² curve)",
    )
    signed: bool = Field(
        default=True,
        description="decompose onto the signed columns [W, -W] (a neuron may add either sign); "
        "false: onto +W only",
    )
    neuron_multipliers: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.5, 2.0, 3.0, 4.0],
        min_length=1,
        description="circuit-neuron steering sweep (activation × m; 1 = unsteered)",
    )
    vector_multipliers: list[float] = Field(
        default_factory=lambda: [-8.0, -4.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0, 8.0],
        min_length=1,
        description="CAA and circuit-rebuilt vector sweep (residual + m × vector; 0 = unsteered)",
    )
    neuron_positions: Literal["all", "circuit"] = "all"
    vector_positions: Literal["last", "all"] = Field(
        default="last", description="vectors are added at the last prompt token (and later)"
    )
    caa_layer: int | None = Field(
        default=None,
        ge=0,
        description="CAA layer; null: the layer whose vector moves the behaviour most at "
        "multiplier 1 on the train prompts",
    )
    neutral_prompts: list[str] = Field(
        default_factory=lambda: list(NEUTRAL_PROMPTS),
        min_length=2,
        description="prompts the side effect (KL to the unsteered model) is measured on",
    )
    max_prompts: int = Field(default=64, ge=2, description="test prompts used for the sweep (cap)")
    bootstrap_resamples: int = Field(
        default=1000, ge=100, description="bootstrap over prompts (as the steering reports)"
    )
    confidence: float = Field(default=0.95, gt=0, lt=1)
    batch_size: int = Field(default=32, ge=1)
    seed: int = Field(default=0, description="permutation nulls")

    @field_validator("neuron_multipliers", "vector_multipliers")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        bad = [m for m in v if not math.isfinite(m)]
        if bad:
            raise ValueError(f"multipliers must be finite, got {bad}")
        return v

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: list[int]) -> list[int]:
        bad = [k for k in v if k < 1]
        if bad:
            raise ValueError(f"sparsity levels are numbers of neurons >= 1, got {bad}")
        return sorted(set(v))
