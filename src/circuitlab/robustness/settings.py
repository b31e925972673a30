"""Settings of the seed-robustness run (`robustness` in the config; `make robustness`). No
torch here."""

from __future__ import annotations

from pydantic import Field, field_validator

from circuitlab.types import StrictModel


class RobustnessConfig(StrictModel):
    """Train `model` (a toy model of the config) again with each of `seeds` and judge every
    verdict of the report on each draw. The config gains one model per seed other than the
    model's own training seed, named ``{model}-seed{s}``: the same architecture, corpus and
    schedule, only ``training.seed`` differs (weight initialisation and batch order)."""

    model: str = Field(default="toy", description="the toy model whose seeds are compared")
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=2,
        description="training seeds (the model's own seed reuses the model itself)",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds has duplicates: {v}")
        return v


def seed_model_name(model: str, seed: int) -> str:
    """The config name of `model` trained with training seed `seed`."""
    return f"{model}-seed{seed}"
