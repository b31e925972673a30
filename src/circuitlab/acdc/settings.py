"""Settings of edge-level circuit discovery and its evaluation (`acdc` in the config), the
methods it offers, the module each runs and the keys each job reads. No torch here."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from circuitlab.types import Ablation, StrictModel

AcdcMethod = Literal["acdc", "acdc_approx", "acdc_window", "head_pruning", "eap"]
ACDC_METHODS: tuple[str, ...] = ("acdc", "acdc_approx", "acdc_window", "head_pruning", "eap")
# The module each method runs. `circuitlab.acdc.discover` imports it by this name when the
# method runs, so an `acdc_circuit` job's code fingerprint holds its own method's module only
# (a change to `acdc/fast.py` reruns the `acdc` jobs, not `eap`'s).
ACDC_METHOD_MODULES: dict[str, str] = {
    "acdc": "circuitlab.acdc.fast",
    "acdc_approx": "circuitlab.acdc.approx",
    "acdc_window": "circuitlab.acdc.approx",
    "head_pruning": "circuitlab.acdc.heads",
    "eap": "circuitlab.acdc.eap",
}
# The `acdc` keys each method's discovery job reads, and the keys the evaluation reads: a job's
# params are exactly these, so changing `batch_size` or `n_eval_prompts` reruns no discovery,
# and changing `eap_sizes` reruns only the `eap` jobs. (`methods` is read by the Snakefile.)
# `tests/acdc/test_discover.py` checks each method reads nothing else.
ACDC_DISCOVERY_KEYS: tuple[str, ...] = ("ablation", "n_prompts", "seed")
_TAU_KEYS = ("faithfulness", "tao_bases", "tao_exps", "edge_order")
ACDC_METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "acdc": (*_TAU_KEYS, "window", "max_window", "trace"),
    "acdc_approx": (*_TAU_KEYS, "approx_window", "approx_variant", "approx_risk"),
    "acdc_window": (*_TAU_KEYS, "approx_window"),
    "head_pruning": ("head_threshold", "head_metric"),
    "eap": ("eap_metric", "eap_ig_steps", "eap_sizes"),
}
ACDC_EVALUATION_KEYS: tuple[str, ...] = (
    "reference_tau",
    "ablation",
    "n_eval_prompts",
    "random_seeds",
    "batch_size",
    "seed",
)


class AcdcConfig(StrictModel):
    """Edge-level circuits (ACDC family, head pruning, EAP) and their evaluation."""

    methods: list[AcdcMethod] = Field(
        default_factory=lambda: list(ACDC_METHODS),
        min_length=1,
        description="acdc: exact fast ACDC; acdc_approx: group-testing approximation; "
        "acdc_window: windowed approximation; head_pruning: greedy head-level pruning; "
        "eap: edge attribution patching",
    )
    ablation: Ablation = Field(
        default="resample", description="what a patched edge carries (corrupt run, mean, zeros)"
    )
    faithfulness: Literal["kl", "mse"] = Field(
        default="kl", description="ACDC's distance of the patched logits from the clean ones"
    )
    tao_bases: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0],
        min_length=1,
        description="τ sweep: base · 10^exp (default: 1, 2, 5 × 10^-4…-2, nine τ from 1e-4 "
        "to 5e-2, chosen from the measured cost in BENCHMARKS.md; auto-circuit's default: "
        "[1, 3, 5, 7, 9] × [-5 … -2])",
    )
    tao_exps: list[int] = Field(default_factory=lambda: [-4, -3, -2], min_length=1)
    edge_order: Literal["circuitlab", "autocircuit"] = Field(
        default="circuitlab",
        description="ACDC's order of the edges inside one destination layer: circuitlab (Q, "
        "then K, then V heads; sources earliest first) or autocircuit (head by head Q, K, V; "
        "sources latest first: the peer's canonical order). ACDC is greedy, so the order can "
        "change circuits",
    )
    trace: bool = Field(
        default=True,
        description="acdc: keep the per-edge trace (faithfulness, Δ, decision, near-τ flag of "
        "every check) in the circuit artifact",
    )
    reference_tau: float = Field(
        default=0.01,
        gt=0,
        description="the τ of the sweep closest to this gives the circuit drawn (DOT) and "
        "compared between methods (chosen by the evaluation: discovery does not read it)",
    )
    window: int | None = Field(
        default=None,
        ge=1,
        description="exact fast ACDC: fixed speculation window (null: adaptive on a GPU, 1 on "
        "a CPU, where batched candidates cost more than single checks)",
    )
    max_window: int = Field(default=16, ge=1, description="exact fast ACDC: largest window")
    approx_window: int = Field(
        default=16, ge=1, description="acdc_approx / acdc_window: edges tested per forward"
    )
    approx_variant: Literal["group", "guided"] = Field(
        default="guided",
        description="acdc_approx: plain group testing (fixed groups of approx_window, bisected "
        "on failure) or gradient-guided (groups drawn by an EAP-IG estimate of each edge's "
        "effect: an edge estimated at ≥ approx_risk·τ is checked alone, others grouped while "
        "their summed estimate stays below it, at most approx_window per group)",
    )
    approx_risk: float = Field(
        default=0.5,
        gt=0,
        allow_inf_nan=False,
        description="acdc_approx guided: a group's summed estimated effect stays below "
        "approx_risk·τ",
    )
    n_prompts: int = Field(default=16, ge=1, description="train prompts used for discovery (cap)")
    n_eval_prompts: int = Field(default=32, ge=1, description="test prompts for evaluation (cap)")
    head_threshold: float = Field(
        default=0.1, gt=0, allow_inf_nan=False, description="head pruning: |Δmetric| threshold"
    )
    head_metric: Literal["target_logit", "logit_diff", "kl"] = Field(
        default="target_logit", description="head pruning metric (seed: target_logit)"
    )
    eap_metric: Literal["logit_diff", "target_logit"] = Field(
        default="logit_diff", description="the metric EAP differentiates"
    )
    eap_ig_steps: int = Field(default=1, ge=1, description="EAP integrated-gradient steps (1: EAP)")
    eap_sizes: list[float] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
        min_length=1,
        description="EAP circuits: the top fraction of edges by |score|",
    )
    random_seeds: int = Field(default=5, ge=5, description="random equal-size edge sets per size")
    batch_size: int = Field(default=16, ge=1, description="edge sets per evaluation forward")
    seed: int = Field(default=0, description="prompt sampling and random controls")

    @field_validator("tao_bases")
    @classmethod
    def _tao_bases(cls, v: list[float]) -> list[float]:
        bad = [b for b in v if not (math.isfinite(b) and b > 0)]
        if bad:
            raise ValueError(f"tao_bases must be positive and finite, got {bad}")
        return v

    @field_validator("eap_sizes")
    @classmethod
    def _sizes(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not (math.isfinite(s) and 0 < s <= 1)]
        if bad:
            raise ValueError(f"eap_sizes are fractions of all edges in (0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _taus(self) -> AcdcConfig:
        bad = [t for t in self.taus() if not (math.isfinite(t) and t > 0)]
        if bad:
            raise ValueError(f"τ = base · 10^exp must be positive and finite, got {bad[:5]}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods has duplicates: {self.methods}")
        return self

    def discovery_params(self, method: str) -> dict[str, Any]:
        """What a discovery job of ``method`` reads (`ACDC_METHOD_KEYS`), as JSON values."""
        keys = {*ACDC_DISCOVERY_KEYS, *ACDC_METHOD_KEYS[method]}
        return self.model_dump(mode="json", include=keys)

    def evaluation_params(self) -> dict[str, Any]:
        """What the evaluation of a task's circuits reads (`ACDC_EVALUATION_KEYS`)."""
        return self.model_dump(mode="json", include=set(ACDC_EVALUATION_KEYS))

    def taus(self) -> list[float]:
        """The sweep in `SweepConfig.taus` order (product of bases and exponents)."""
        out = []
        for a in self.tao_bases:
            for b in self.tao_exps:
                try:
                    out.append(float(a) * 10.0 ** float(b))
                except OverflowError:
                    out.append(math.inf)
        return out
