"""The typed pipeline config: one pydantic model, validated on read, exported as JSON schema.

`workflow/schemas/config.schema.yaml` is generated from `Config` (`circuitlab schema`), so
Snakemake's `validate()` and Python agree; a test keeps the two in sync. Task and behaviour
sections are built from the task registry, so adding a family needs no edit here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    create_model,
    field_validator,
    model_validator,
)

from circuitlab.blacklist_prompts import DEFAULT_PROMPTS
from circuitlab.errors import ConfigError
from circuitlab.models.spec import ModelSpec
from circuitlab.tasks import families
from circuitlab.tasks.base import StrictModel, TaskParams
from circuitlab.validation import parse_model


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
    threads: int = Field(default=2, ge=1, description="torch CPU threads (fixed for determinism)")
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
    architecture: ToyArchitecture = ToyArchitecture()
    training: ToyTraining = ToyTraining()
    corpus: ToyCorpus = ToyCorpus()


class HubModelConfig(ModelSpec):
    """A Hugging Face model by hub id (or local directory) — see `ModelSpec` for the fields."""

    source: Literal["hf"]


ModelConfig = Annotated[ToyModelConfig | HubModelConfig, Field(discriminator="source")]


def _sections(kind: Literal["task", "behaviour"]) -> Any:
    fields: dict[str, Any] = {
        f.name: (f.params | None, Field(default=None, description=f.description))
        for f in sorted(families(kind), key=lambda f: f.name)
    }
    return create_model(f"{kind.title()}sConfig", __base__=StrictModel, **fields)


TasksConfig = _sections("task")
BehavioursConfig = _sections("behaviour")


class DatasetsConfig(StrictModel):
    on_invalid: Literal["fail", "drop"] = Field(
        default="fail",
        description="rows whose prompts or targets do not tokenize cleanly for a model: "
        "'fail' lists them and stops, 'drop' removes them and records the count",
    )


class EvaluationConfig(StrictModel):
    batch_size: int = Field(default=64, ge=1)
    min_accuracy: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="fail the evaluate_model rule if any task's test accuracy is below this",
    )


class BlacklistConfig(StrictModel):
    """Universal neurons: in the top-k |activation| at the last position of most prompts."""

    prompts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMPTS),
        min_length=20,
        description="diverse prompts unrelated to the tasks (>= 20); the default uses the toy "
        "model's filler vocabulary — give your own for a real model",
    )
    top_k: int = Field(default=50, ge=1, description="top-k |activation| per layer and prompt")
    threshold_fraction: float = Field(
        default=0.8, gt=0, le=1, description="share of prompts a neuron must be in the top-k of"
    )
    batch_size: int = Field(default=32, ge=1)


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
    attention_rule: Literal["full", "half", "cp"] = Field(
        default="full", description="gradient rule through attention (full = seed behaviour)"
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
    ablation: Literal["resample", "mean", "zero"] = Field(
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
        """The sweep in `ACDCConfig.taus` order (product of bases and exponents)."""
        out = []
        for a in self.tao_bases:
            for b in self.tao_exps:
                try:
                    out.append(float(a) * 10.0 ** float(b))
                except OverflowError:
                    out.append(math.inf)
        return out


def _finite_multipliers(v: list[float]) -> list[float]:
    bad = [m for m in v if not math.isfinite(m)]
    if bad:
        raise ValueError(f"multipliers must be finite numbers, got {bad}")
    if len(set(v)) != len(v):
        raise ValueError(f"multipliers has duplicates: {v}")
    return sorted(v)


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
    behaviour_methods: list[Literal["lrp", "contrastive"]] = Field(
        default_factory=lambda: ["contrastive", "lrp"],
        min_length=1,
        description="which circuits of a behaviour are steered (tasks: lrp)",
    )
    random_seeds: int = Field(default=5, ge=5, description="random matched neuron sets")
    bootstrap_resamples: int = Field(default=1000, ge=100, description="bootstrap over prompts")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    neutral_prompts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMPTS),
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
    max_kl: float = Field(
        default=0.5,
        gt=0,
        description="selection budget: mean neutral-prompt KL a chosen (layer, m) may cost",
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
        default_factory=lambda: list(DEFAULT_PROMPTS),
        min_length=2,
        description="prompts the side effect (KL to the unsteered model) is measured on",
    )
    max_prompts: int = Field(default=64, ge=2, description="test prompts used for the sweep (cap)")
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


class Config(StrictModel):
    seed: int = Field(default=0, description="the seed every stage derives its own from")
    models: dict[str, ModelConfig | None] = Field(
        min_length=1,
        description="name → model; null disables an entry (e.g. `toy: null` in a config "
        "passed with --configfile, which Snakemake merges into config/config.yaml)",
    )
    tasks: TasksConfig = Field(default_factory=TasksConfig)  # type: ignore[valid-type]
    behaviours: BehavioursConfig = Field(default_factory=BehavioursConfig)  # type: ignore[valid-type]
    datasets: DatasetsConfig = DatasetsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    blacklist: BlacklistConfig = BlacklistConfig()
    lrp: LrpConfig = LrpConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    faithfulness: FaithfulnessConfig = FaithfulnessConfig()
    acdc: AcdcConfig = AcdcConfig()
    compare: CompareConfig = CompareConfig()
    steering: SteeringConfig = SteeringConfig()
    caa: CaaConfig = CaaConfig()

    @model_validator(mode="after")
    def _names(self) -> Config:
        if not self.active_models():
            raise ValueError("every model is disabled (null); enable at least one")
        for name in self.models:
            if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"model name {name!r} may only hold letters, digits, - _ .")
        if not self.task_names() and not self.behaviour_names():
            raise ValueError("no task or behaviour is enabled")
        return self

    def task_names(self) -> list[str]:
        return [k for k, v in self.tasks if v is not None]

    def behaviour_names(self) -> list[str]:
        return [k for k, v in self.behaviours if v is not None]

    def dataset_names(self) -> list[str]:
        return self.task_names() + self.behaviour_names()

    def dataset_params(self, name: str) -> Any:
        for section in (self.tasks, self.behaviours):
            value = getattr(section, name, None)
            if value is not None:
                return value
        raise ConfigError(
            f"task {name!r} is not enabled in the config; enabled: {', '.join(self.dataset_names())}"
        )

    def corpus_params(self) -> dict[str, dict[str, Any]]:
        """Each enabled family's params minus the split sizes: what the toy corpus depends on.

        Changing `n_train` of one task therefore rebuilds that task's dataset only, not the model.
        """
        split_keys = set(TaskParams.model_fields)
        return {
            name: self.dataset_params(name).model_dump(mode="json", exclude=split_keys)
            for name in self.dataset_names()
        }

    def model(self, name: str) -> ToyModelConfig | HubModelConfig:
        active = self.active_models()
        if name not in active:
            raise ConfigError(f"unknown model {name!r}; enabled: {', '.join(active)}")
        return active[name]

    def active_models(self) -> dict[str, ToyModelConfig | HubModelConfig]:
        return {k: v for k, v in self.models.items() if v is not None}


def read_config_yaml(path: str | Path) -> dict[str, Any]:
    """One config file's mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(raw).__name__}")
    return raw


def merge_config(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` merged into ``base`` as Snakemake merges `--configfile`: mappings merge key by
    key, recursively; any other value (a list, a scalar, null) replaces the base's."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    source: dict[str, Any] | str | Path, *overlays: str | Path, where: str | None = None
) -> Config:
    """Validate a config dict or YAML file, with `--configfile`-style ``overlays`` merged on top
    in order; errors name every bad key and the allowed ones (and ``where`` it came from)."""
    if isinstance(source, dict):
        raw, label = source, "config"
    else:
        raw, label = read_config_yaml(source), str(source)
    for overlay in overlays:
        raw = merge_config(raw, read_config_yaml(overlay))
        label = f"{label} + {overlay}"
    return parse_model(Config, raw, where or label)


def json_schema() -> dict[str, Any]:
    """The JSON schema of `Config`, as written to workflow/schemas/config.schema.yaml."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = (
        "circuitlab pipeline config. GENERATED from circuitlab.config.Config by "
        "`circuitlab schema --out workflow/schemas/config.schema.yaml`; do not edit by hand."
    )
    return schema


def schema_yaml() -> str:
    return yaml.safe_dump(json_schema(), sort_keys=True, width=100)
