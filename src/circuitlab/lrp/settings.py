"""Settings of the LRP stages: attribution (`lrp`), circuit selection (`lrp.selection`), the
contrastive circuits of behaviours (`contrastive`) and the faithfulness evaluation
(`faithfulness`). No torch here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from circuitlab.types import StrictModel


class SelectionConfig(StrictModel):
    """How circuit neurons are picked from the aggregated attributions (seed semantics)."""

    method: Literal["threshold", "topk", "percentage", "per_layer_topk"] = Field(
        default="percentage",
        description="threshold: smallest set reaching a cumulative share of total |attribution|; "
        "topk: the top_k largest; percentage: |attribution| >= threshold x |mean metric|; "
        "per_layer_topk: per_layer_topk per layer, then (if top_k) the global top_k",
    )
    threshold: float = Field(default=0.005, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    per_layer_topk: int | None = Field(default=None, ge=1)
    aggregation: Literal["mean", "any"] = Field(
        default="mean",
        description="mean over prompts, or any: per-prompt filter (percentage of that prompt's "
        "metric) then union, keeping the attribution of largest magnitude",
    )

    @model_validator(mode="after")
    def _needs(self) -> SelectionConfig:
        if self.method == "topk" and self.top_k is None:
            raise ValueError("method 'topk' needs top_k")
        if self.method == "per_layer_topk" and self.per_layer_topk is None:
            raise ValueError("method 'per_layer_topk' needs per_layer_topk")
        return self


class LrpConfig(StrictModel):
    """LRP attribution (gradient x activation at the MLP neurons under the LRP rules)."""

    metric: Literal["target", "logit_diff", "top_other"] = Field(
        default="logit_diff",
        description="target logit; target - counterfactual logit; target - top other logit",
    )
    attention_rule: Literal["full", "half", "cp_attn"] = Field(
        default="full",
        description="gradient rule through attention: full (the seed's), half (half-rule on "
        "q·kᵀ and softmax·v), cp_attn (constant attention pattern; the only rule whose "
        "relevances sum to the metric)",
    )
    filter_bos: bool = Field(default=True, description="ignore neurons at position 0")
    last_n_positions: int | None = Field(
        default=None, ge=1, description="only the last N positions of each prompt (None: all)"
    )
    top_k_per_layer: int | None = Field(
        default=None,
        ge=1,
        description="keep the top-k |attribution| per layer and position of "
        "each prompt before aggregating (seed: 200; None keeps all)",
    )
    skip_layers: list[int] = Field(default_factory=list, description="layers to exclude")
    batch_size: int = Field(default=32, ge=1)
    selection: SelectionConfig = SelectionConfig()

    @field_validator("attention_rule", mode="before")
    @classmethod
    def _renamed(cls, v: object) -> object:
        if v == "cp":
            raise ValueError(
                "attention_rule 'cp' is now called 'cp_attn' (a constant attention pattern with "
                "the MLP rules of AttnLRP, not the CP-LRP of the literature)"
            )
        return v


class ContrastiveConfig(StrictModel):
    """Contrastive neurons of a behaviour (positive minus negative mean activation)."""

    top_k: int = Field(default=200, ge=1)
    skip_layers: list[int] = Field(default_factory=list, description="layers to exclude")


class FaithfulnessConfig(StrictModel):
    """Ablation-based evaluation of LRP circuits on the test split."""

    sizes: list[float] = Field(
        default_factory=lambda: [0.0005, 0.001, 0.005, 0.01, 0.02, 0.05],
        min_length=1,
        description="circuit sizes as fractions of all analysed neurons",
    )
    ablations: list[Literal["mean", "zero"]] = Field(default_factory=lambda: ["mean", "zero"])
    random_seeds: int = Field(default=5, ge=2, description="random matched controls per size")
    calibration_neurons: int = Field(
        default=200, ge=10, description="neurons whose single ablation effect is measured"
    )
    target_faithfulness: float = Field(default=0.8, gt=0, le=1)
