"""The CAA ↔ circuit report `data/compare/{model}/{behaviour}.json` as a typed artifact. No
torch."""

from __future__ import annotations

from pydantic import Field

from circuitlab.artifact import Artifact
from circuitlab.compare.settings import CompareConfig
from circuitlab.steering.artifact import Bootstrap, Signs
from circuitlab.types import StrictModel


class LayerOverlap(StrictModel):
    n_circuit: int
    overlap: int
    expected_overlap: float
    overlap_p: float
    overlap_p_hypergeom: float
    variance_explained: float
    variance_explained_null_mean: float
    variance_explained_p: float


class Overlap(StrictModel):
    """A vector's top neurons against a circuit's, with permutation nulls."""

    layers: dict[str, LayerOverlap]
    total_overlap: int
    total_checked: int
    total_overlap_null_mean: float
    total_overlap_p: float
    mean_variance_explained: float
    mean_variance_explained_null_mean: float
    mean_variance_explained_p: float
    top_overlap: int
    top_overlap_of: int
    top_overlap_null_mean: float
    top_overlap_p: float


class CircuitFit(StrictModel):
    size: int
    lstsq: float
    rebuilt: float


class LayerDecomposition(StrictModel):
    neuron_diff_full: float
    neuron_diff_topk: dict[str, float]
    nnls: dict[str, float]
    nnls_nnz: dict[str, int]
    projection_lstsq: dict[str, float]
    circuits: dict[str, CircuitFit]


class Caa(StrictModel):
    layer: int
    layer_chosen: bool
    layer_effects: dict[str, float]
    vector_norm: float


class SweepPoint(StrictModel):
    """One method at one multiplier: effects (all, behaviour, contrast prompts) and side
    effect, each with its bootstrap interval."""

    multiplier: float
    effect: float | None
    effect_lo: float | None
    effect_hi: float | None
    effect_positive: float | None
    effect_positive_lo: float | None
    effect_positive_hi: float | None
    effect_negative: float | None
    effect_negative_lo: float | None
    effect_negative_hi: float | None
    kl: float | None
    kl_lo: float | None
    kl_hi: float | None
    logit_diff: float


class MatchedMethod(StrictModel):
    max_effect: float
    kl: float | None
    effect_per_kl: float | None


class Matched(StrictModel):
    """One direction: the effect every method reaches and each method's side effect there."""

    measured_on: str
    effect: float | None
    methods: dict[str, MatchedMethod]
    best: str | None
    max_kl: float | None = None  # the KL budget: sweep points beyond it were not used


class CompareReport(Artifact):
    FORMAT = "circuitlab.compare/2"  # /2: bootstrap intervals, KL(steered ‖ unsteered)
    RULE = "compare"

    model: str
    behaviour: str
    circuits: dict[str, str]  # name → circuit file
    vectors: str  # the CAA vectors file
    params: CompareConfig
    n_test_prompts: int
    n_neutral_prompts: int
    bootstrap: Bootstrap
    circuit_sizes: dict[str, int]
    overlap: dict[str, dict[str, Overlap]]  # circuit → vector → overlap
    decomposition: dict[str, LayerDecomposition]  # layer → fits
    caa: Caa
    sweep: dict[str, dict[str, SweepPoint]]  # method → multiplier → point
    neutral_multiplier: dict[str, float]
    #: circuit → which of its neurons each direction scaled (as the steering stage does)
    neuron_signs: dict[str, Signs] = Field(default_factory=dict)
    matched: dict[str, Matched]  # increase / decrease
