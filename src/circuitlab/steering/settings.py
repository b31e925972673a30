"""Settings of neuron steering (`steering`) and of CAA vectors and their steering (`caa`).
No torch here."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from circuitlab.tasks.neutral import NEUTRAL_PROMPTS
from circuitlab.types import StrictModel


def _finite_multipliers(v: list[float]) -> list[float]:
    bad = [m for m in v if not math.isfinite(m)]
    if bad:
        raise ValueError(f"multipliers must be finite numbers, got {bad}")
    if len(set(v)) != len(v):
        raise ValueError(f"multipliers has duplicates: {v}")
    return sorted(v)


class SideEffectBudget(StrictModel):
    """What a steering effect may cost and still count (`circuitlab.steering.evaluate.verdict`).

    A multiplier is *in budget* when the mean KL(steered ‖ unsteered) of the next token on the
    neutral prompts is at most `max_kl` and no other task's test accuracy falls by more than
    `max_accuracy_drop`. Why these defaults: 0.5 nats is the budget CAA's selection has always
    used; on the default model (run of 4cd0a70, issue 26) the vectors chosen within it cost
    0.28–0.34 nats, while a model that no longer does any task (CAA at ×8) cost 20–21 nats.
    Five accuracy points is three of 64 test prompts, and half the gap between the accuracy
    gate (0.9) and a perfect task."""

    max_kl: float = Field(
        default=0.5, gt=0, description="mean neutral-prompt KL (nats) a counted effect may cost"
    )
    max_accuracy_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="largest fall of any other task's test accuracy (a share: 0.05 = 5 points)",
    )


class SteeringConfig(StrictModel):
    """Neuron steering of discovered circuits, evaluated on the test split (`circuitlab steering`)."""

    multipliers: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 4.0],
        min_length=1,
        description="circuit-neuron activation × m (0 ablates, 1 = unsteered)",
    )
    positions: Literal["all", "circuit"] = Field(
        default="all",
        description="steer circuit neurons at every position (seed default; needed for "
        "generated tokens) or only at the circuit's end-relative positions",
    )
    suppress: Literal["all", "supporters"] = Field(
        default="all",
        description="which circuit neurons a multiplier below 1 scales: all (the seed's "
        "ablation of the whole circuit) or only those that support the metric (see `support`)",
    )
    amplify: Literal["all", "supporters"] = Field(
        default="supporters",
        description="which circuit neurons a multiplier above 1 scales: only those that support "
        "the metric (see `support`), or all (the seed's; measured to lower the metric on most "
        "tasks: BENCHMARKS.md 'Why amplifying a circuit failed')",
    )
    support: Literal["gradient", "relevance"] = Field(
        default="gradient",
        description="what decides that a circuit neuron supports the metric: the sign of "
        "gradient × activation over the circuit's train prompts (normalisation included), or "
        "the sign of the attribution stored in the circuit (LRP holds the norms constant)",
    )
    behaviour_methods: list[Literal["lrp", "contrastive"]] = Field(
        default_factory=lambda: ["contrastive", "lrp"],
        min_length=1,
        description="which circuits of a behaviour are steered (tasks: lrp)",
    )
    random_seeds: int = Field(default=5, ge=5, description="random matched neuron sets")
    bootstrap_resamples: int = Field(default=1000, ge=100, description="bootstrap over prompts")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    neutral_prompts: list[str] = Field(
        default_factory=lambda: list(NEUTRAL_PROMPTS),
        min_length=5,
        description="prompts unrelated to every task: side effect = KL(steered ‖ unsteered) of "
        "their next token (the default uses the toy model's filler vocabulary)",
    )
    max_new_tokens: int = Field(
        default=4, ge=1, description="greedy tokens generated for the behaviours' text check"
    )
    text_patterns: dict[str, str] = Field(
        default_factory=lambda: {
            "refusal": r"\b(sorry|cannot)\b",
            "sentiment": r"^\W*positive\b",
        },
        description="behaviour → regex (case-insensitive) a generated text must match to count "
        "as showing the behaviour; a behaviour not listed: text starting with its answer word",
    )
    max_prompts: int | None = Field(
        default=None, ge=2, description="cap on the test prompts per task (null: all)"
    )
    min_effect: float = Field(
        default=0.01,
        ge=0,
        description="a steering result only 'beats its control' if delta's interval excludes 0 "
        "and its mean is at least this (primary metric units: probability or logit difference)",
    )
    budget: SideEffectBudget = Field(
        default_factory=SideEffectBudget,
        description="side effects a counted steering effect may have: each (circuit or "
        "vector, direction) is judged at its best multiplier within this budget",
    )
    batch_size: int = Field(default=64, ge=1)
    seed: int = Field(default=0, description="random controls and bootstrap")

    @field_validator("multipliers")
    @classmethod
    def _multipliers(cls, v: list[float]) -> list[float]:
        return _finite_multipliers(v)


class CaaConfig(StrictModel):
    """CAA control vectors of a behaviour (`circuitlab caa`) and their steering evaluation."""

    multipliers: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
        min_length=2,
        description="residual + m × vector (0 = unsteered); the test dose-response grid and "
        "(its non-zero entries) the selection grid",
    )
    layers: list[int] | None = Field(
        default=None, description="candidate layers for the selection (null: every layer)"
    )
    site: Literal["resid", "mlp_out", "activation_weighted"] = Field(
        default="resid", description="which vector is added to the residual stream"
    )
    positions: Literal["last", "all"] = Field(
        default="last", description="add at the last prompt token and every generated token, or all"
    )
    validation_fraction: float = Field(
        default=0.25, gt=0, lt=1, description="share of train pairs kept out to choose layer and m"
    )
    max_kl: float | None = Field(
        default=None,
        gt=0,
        description="selection budget: mean neutral-prompt KL a chosen (layer, m) may cost "
        "(null: the steering budget's max_kl)",
    )
    random_seeds: int = Field(default=5, ge=5, description="norm-matched random vectors")
    batch_size: int = Field(default=32, ge=1)

    @field_validator("multipliers")
    @classmethod
    def _multipliers(cls, v: list[float]) -> list[float]:
        v = _finite_multipliers(v)
        if not any(m != 0 for m in v):
            raise ValueError("multipliers needs a non-zero entry")
        return v
