"""Settings of a hub model entry (`models.<name>` with `source: hf`), of a random model of a
published shape (`source: random`) and of the model evaluation (`evaluation` in the config).
No torch here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from circuitlab.models.spec import ModelSpec
from circuitlab.models.toy.settings import ToyCorpus
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


class RandomModelConfig(StrictModel):
    """A randomly initialised model of a published shape (`circuitlab.models.random`): real
    dimensions and vocabulary size, random weights, the task corpus's word-level tokenizer.
    For running every stage at a real model's scale where the checkpoint cannot be had."""

    source: Literal["random"]
    shape: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="a shape file's name in config/shapes/ (an HF config.json with its source "
        "noted), e.g. gpt2-small, qwen2.5-0.5b, llama-3.2-1b",
    )
    seed: int = Field(default=0, description="the weights' initialisation seed")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="the saved weights' dtype (what every stage loads)"
    )
    device: str = Field(
        default="cpu", description="where the stages run it: 'cpu', 'cuda', 'cuda:N', 'auto'"
    )
    n_layers: int | None = Field(
        default=None,
        ge=1,
        description="keep only the first N layers (a layer-limited slice with every other "
        "dimension real, e.g. for exact ACDC on a CPU); null: the shape's own count",
    )
    corpus: ToyCorpus = Field(
        default_factory=ToyCorpus,
        description="the corpus the tokenizer's vocabulary is read from (as the toy model's)",
    )
