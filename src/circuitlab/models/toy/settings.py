"""Settings of the embedded default model (`models.toy` in the config): architecture, training
and corpus. No torch here: the config assembler and the Snakefile import this."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from circuitlab.models.spec import DEVICE_PATTERN
from circuitlab.types import StrictModel


class ToyArchitecture(StrictModel):
    n_layers: int = Field(default=4, ge=1, le=48)
    d_model: int = Field(default=128, ge=8)
    n_heads: int = Field(default=8, ge=1)
    n_kv_heads: int = Field(default=2, ge=1)
    d_mlp: int = Field(default=512, ge=8)
    max_seq_len: int = Field(default=64, ge=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> ToyArchitecture:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        return self


class ToyTraining(StrictModel):
    steps: int = Field(default=4000, ge=1, description="optimiser steps")
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=200, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    seed: int = 0
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch CPU threads; null: the cores the job is given (the rule asks for 8, "
        "Snakemake gives at most --cores). The weights do not depend on the count under the "
        "numerics pins (tests/provenance/test_golden.py)",
    )
    log_every: int = Field(default=10, ge=1, description="record the loss every N steps")


class ToyCorpus(StrictModel):
    sentences_per_family: int = Field(default=15000, ge=1)
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="per-family multiplier of sentences_per_family (missing families: 1.0); "
        "algorithmic families (ioi, induction) need more examples than factual ones",
    )
    filler_sentences: int = Field(default=5000, ge=0)

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w > 0}
        if bad:
            raise ValueError(f"corpus weights must be > 0, got {bad}")
        return v


class ToyModelConfig(StrictModel):
    """The embedded default: a small Llama trained by the pipeline on the task corpus."""

    source: Literal["toy"]
    device: str = Field(
        default="cpu",
        pattern=DEVICE_PATTERN,
        description="where the stages run the trained model: 'cpu' (the default; bit-identical "
        "under the numerics pins), 'cuda', 'cuda:N' or 'auto'. Training is on CPU whatever this "
        "says",
    )
    architecture: ToyArchitecture = ToyArchitecture()
    training: ToyTraining = ToyTraining()
    corpus: ToyCorpus = ToyCorpus()
