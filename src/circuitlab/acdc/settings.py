"""Settings of edge-level circuit discovery and its evaluation (`acdc` in the config), the
methods it offers and the keys each job reads. No torch here.

`AcdcConfig` is the whole section: its own keys, ``methods`` and one sub-config per registered
method (``acdc.<method>``, from each method's file, `circuitlab.acdc.registry`); building it
imports every method's file, which the Snakefile and `validate-config` do. A job builds only
what it reads (`acdc_model`): a discovery job the section's keys and its own method's
sub-config, the evaluation none — so a job loads its own method's file only, the file its code
fingerprint holds."""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from circuitlab.acdc.registry import default_methods, edge_methods, get_method, method_files
from circuitlab.types import Ablation, StrictModel

AcdcMethod = Literal[method_files()]  # type: ignore[valid-type]
# The section-level `acdc` keys every discovery job reads (a method adds its own sub-config
# and its `shared` keys, `circuitlab.acdc.registry`), and the keys the evaluation reads: a
# job's params are exactly these, so changing `batch_size` or `n_eval_prompts` reruns no
# discovery, and changing `acdc.eap.sizes` reruns only the `eap` jobs. (`methods` is read by
# the Snakefile.) `tests/acdc/test_discover.py` checks each method reads nothing else.
ACDC_DISCOVERY_KEYS: tuple[str, ...] = ("ablation", "n_prompts", "seed", "kv_edges")
ACDC_EVALUATION_KEYS: tuple[str, ...] = (
    "reference_tau",
    "ablation",
    "n_eval_prompts",
    "random_seeds",
    "batch_size",
    "eval_memory_gb",
    "seed",
    "kv_edges",
)
# keys of the flat `acdc` section before each method had its own sub-config → where they went
_MOVED = {
    "window": "acdc.acdc.window",
    "max_window": "acdc.acdc.max_window",
    "trace": "acdc.acdc.trace",
    "approx_window": "acdc.acdc_approx.window and acdc.acdc_window.window",
    "approx_variant": "acdc.acdc_approx.variant",
    "approx_risk": "acdc.acdc_approx.risk",
    "head_threshold": "acdc.head_pruning.threshold",
    "head_metric": "acdc.head_pruning.metric",
    "eap_metric": "acdc.eap.metric",
    "eap_ig_steps": "acdc.eap_ig_masks.steps (circuitlab's mask-path EAP-IG; MIB's are "
    "eap_ig_inputs and eap_ig_activations)",
    "eap_sizes": "acdc.eap.sizes (each ranking method has its own sizes)",
}


class AcdcSection(StrictModel):
    """Edge-level circuits and their evaluation: the section's own keys (`acdc_model` adds the
    methods' sub-configs)."""

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
    reference_tau: float = Field(
        default=0.01,
        gt=0,
        description="the τ of the sweep closest to this gives the circuit drawn (DOT) and "
        "compared between methods (chosen by the evaluation: discovery does not read it)",
    )
    kv_edges: Literal["kv_head", "query_head"] = Field(
        default="kv_head",
        description="under grouped-query attention, the graph's K/V inputs: per KV head (the "
        "model's structure) or per query head (MIB's EAP-IG graph: circuits comparable with "
        "MIB's, more edges); the same graph without GQA",
    )
    n_prompts: int = Field(default=16, ge=1, description="train prompts used for discovery (cap)")
    n_eval_prompts: int = Field(default=32, ge=1, description="test prompts for evaluation (cap)")
    random_seeds: int = Field(default=5, ge=5, description="random equal-size edge sets per size")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="edge sets per evaluation forward (null: 1 on a CPU, where a set costs "
        "more the more share a forward — 41 vs 78 ms per set at 1 vs 16 on the toy model, "
        "BENCHMARKS.md; 16 on a GPU, which batching fills)",
    )
    eval_memory_gb: float = Field(
        default=8.0,
        gt=0,
        description="memory (GiB) one evaluation forward may give its per-set activations; "
        "fewer edge sets, then fewer prompts per forward when they need more (the formula: "
        "circuitlab.acdc.evaluate.pair_bytes)",
    )
    seed: int = Field(default=0, description="prompt sampling and random controls")

    @field_validator("tao_bases")
    @classmethod
    def _tao_bases(cls, v: list[float]) -> list[float]:
        bad = [b for b in v if not (math.isfinite(b) and b > 0)]
        if bad:
            raise ValueError(f"tao_bases must be positive and finite, got {bad}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [f"acdc.{k} is now {_MOVED[k]}" for k in data if k in _MOVED]
            if moved:
                raise ValueError("; ".join(moved))
        return data

    @model_validator(mode="after")
    def _taus(self) -> AcdcSection:
        bad = [t for t in self.taus() if not (math.isfinite(t) and t > 0)]
        if bad:
            raise ValueError(f"τ = base · 10^exp must be positive and finite, got {bad[:5]}")
        return self

    def method_settings(self, method: str) -> StrictModel:
        """``acdc.<method>``: the method's own sub-config (`circuitlab.acdc.registry`);
        ConfigError for an unknown method or one this model was built without."""
        get_method(method)  # ConfigError for an unknown name
        own = getattr(self, method, None)
        if own is None:
            from circuitlab.errors import ConfigError

            raise ConfigError(f"this acdc config was built without {method!r}'s settings")
        return own  # type: ignore[no-any-return]

    def discovery_params(self, method: str) -> dict[str, Any]:
        """What a discovery job of ``method`` reads — `ACDC_DISCOVERY_KEYS`, the method's
        `shared` keys and its own sub-config — as JSON values."""
        keys = {*ACDC_DISCOVERY_KEYS, *get_method(method).shared, method}
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


class _AcdcWithMethods(AcdcSection):
    """The whole section: its own keys and ``methods``."""

    methods: list[AcdcMethod] = Field(
        default_factory=default_methods,
        min_length=1,
        description="the edge methods to run (`circuitlab acdc-methods` lists them; default: "
        "every method not marked opt-in)",
    )

    @model_validator(mode="after")
    def _unique(self) -> _AcdcWithMethods:
        if self.methods is not None and len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods has duplicates: {self.methods}")
        return self


@cache
def acdc_model(methods: tuple[str, ...] | None = None) -> type[AcdcSection]:
    """The `acdc` section's model with the sub-configs of ``methods`` checked (imports those
    methods' files only; the other methods' keys and ``methods`` are accepted and not read);
    None: the whole section, `AcdcConfig` (every registered method checked)."""
    entries = edge_methods() if methods is None else {m: get_method(m) for m in methods}
    fields: dict[str, Any] = {
        name: (m.settings, Field(default_factory=m.settings, description=m.summary))
        for name, m in entries.items()
    }
    if methods is not None:  # a job's model: the rest of the section is accepted, not read
        fields["methods"] = (list[AcdcMethod] | None, Field(default=None))
        for other in method_files():
            if other not in entries:
                text = "another method's settings: not read (nor checked) by this job"
                fields[other] = (dict[str, Any] | None, Field(default=None, description=text))
    return create_model(  # type: ignore[no-any-return, call-overload]
        "AcdcConfig",
        __base__=_AcdcWithMethods,
        __module__=__name__,
        __doc__="Edge-level circuits (the registered methods, `circuitlab.acdc.registry`) and "
        "their evaluation: the section's keys and ``acdc.<method>``, each method's own keys.",
        **fields,
    )


if TYPE_CHECKING:  # for type checkers, the whole section's own keys
    AcdcConfig = _AcdcWithMethods
    ACDC_METHODS: tuple[str, ...]
else:

    def __getattr__(name: str) -> Any:
        """`AcdcConfig` (the whole section) and `ACDC_METHODS` (every registered method, in
        order), built on first use: they import every method's file."""
        if name == "AcdcConfig":
            return acdc_model()
        if name == "ACDC_METHODS":
            return tuple(edge_methods())
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
