"""The steering report `data/steering/{model}/{name}/{method}.json` as a typed artifact (neuron
steering of a circuit, or a CAA vector): the dose-response of every metric with bootstrap
intervals, the leakage row, the verdicts against the controls, sample generations. No torch."""

from __future__ import annotations

from typing import ClassVar, Literal

from circuitlab.artifact import Artifact, Metrics
from circuitlab.types import StrictModel


class Interval(StrictModel):
    """A mean over prompts with its percentile bootstrap interval."""

    mean: float
    lo: float
    hi: float
    n: int


class Cell(StrictModel):
    """One metric at one multiplier: steered, control (mean of the random controls), their
    difference, and each one's change from the unsteered model."""

    steered: Interval
    control: Interval
    delta: Interval
    steered_effect: Interval
    control_effect: Interval


class Arm(StrictModel):
    """The verdict of one direction (`circuitlab.steering.evaluate.verdict`): the best
    multiplier within the side-effect budget and whether steering there beats its control on
    the primary metric. `delta` is at `confidence`, Bonferroni-corrected for the `candidates`
    in-budget multipliers the best was chosen from. ``in_budget: false``: no multiplier of this
    direction fits the budget; the arm shows the mildest one and never beats its control."""

    multiplier: float
    steered_effect: Interval
    control_effect: Interval
    delta: Interval
    beats_control: bool
    in_budget: bool
    candidates: int
    confidence: float
    kl_neutral: float
    kl_neutral_control: float | None = None  # not for CAA's chosen multiplier
    accuracy_drop: float


class Verdicts(StrictModel):
    primary: str
    unsteered: float | None = None
    suppress: Arm | None = None
    amplify: Arm | None = None
    chosen: Arm | None = None  # CAA: the multiplier chosen on the validation prompts


class Bootstrap(StrictModel):
    resamples: int
    confidence: float


class SideEffects(StrictModel):
    """One multiplier's side effects: mean neutral-prompt KL, the largest fall of another
    task's accuracy, and whether both fit the budget."""

    kl_neutral: float
    accuracy_drop: float
    in_budget: bool


class Budget(StrictModel):
    """The side-effect budget of a report and each multiplier's side effects against it."""

    max_kl: float
    max_accuracy_drop: float
    multipliers: dict[str, SideEffects]  # "m=…"


class Signs(StrictModel):
    """Which circuit neurons each direction scaled (`circuitlab.steering.stages.neuron_sets`):
    `signs` (direction → all / supporters), what decided support, the supporters and opposers
    by that source, the share of neurons whose stored attribution has the same sign, and the
    number of neurons each direction steered."""

    support: str
    signs: dict[str, str]
    n_supporters: int | None = None
    n_opposers: int | None = None
    sign_agreement: float | None = None
    n_steered: dict[str, int]


class SteeringReport(Artifact):
    FORMAT = "circuitlab.steering/2"  # /2: verdicts within a side-effect budget
    RULE = "steering"

    model: str
    name: str
    kind: Literal["task", "behaviour"]
    method: str  # lrp, contrastive, caa
    steering: Literal["neurons", "vector"]
    positions: str
    n_test: int
    metric_names: list[str]
    multipliers: list[float]
    unsteered_multiplier: float
    random_seeds: int
    bootstrap: Bootstrap
    #: metric → {"unsteered": Interval, "m=…": Cell}
    metrics: dict[str, dict[str, Cell | Interval]]
    #: other task → {"m=…": change of its accuracy}
    leakage: dict[str, dict[str, float]]
    budget: Budget
    summary: Verdicts
    #: "unsteered" / "m=…" → the first generated texts (behaviours)
    samples: dict[str, list[str]]
    # neuron steering
    n_neurons: int | None = None
    neurons_per_layer: dict[str, int] | None = None
    signs: Signs | None = None
    # a CAA vector
    layer: int | None = None
    site: str | None = None
    chosen_multiplier: float | None = None
    vector_norm: float | None = None


class Verdict(StrictModel):
    """One steering report's verdicts in the summary: the primary metric and, for each
    direction it was steered in, whether it beat its random control and by how much."""

    primary: str
    suppress_beats_control: bool | None = None
    suppress_delta: float | None = None
    suppress_multiplier: float | None = None
    suppress_in_budget: bool | None = None
    amplify_beats_control: bool | None = None
    amplify_delta: float | None = None
    amplify_multiplier: float | None = None
    amplify_in_budget: bool | None = None


class VerdictCounts(StrictModel):
    """One direction over a model's reports: rows judged, rows that beat their control within
    the budget, rows with no multiplier within the budget."""

    rows: int
    beat: int
    no_budget: int


class SteeringSummary(Metrics):
    """``data/metrics/steering/{model}/summary.json`` (`circuitlab.steering.stages
    .leakage_matrix`): every report's verdicts (rows ``{name}/{method}``) and the task × task
    leakage matrix per direction (``suppress``/``amplify`` → row → other task → change of its
    accuracy)."""

    RULE: ClassVar[str] = "steering_summary"

    verdicts: dict[str, Verdict]
    leakage: dict[str, dict[str, dict[str, float | None]]]
    counts: dict[str, VerdictCounts]
    n_reports: int


class CaaSelection(Metrics):
    """``data/metrics/caa/{model}/{behaviour}.json``: the layer and multiplier CAA chose on its
    validation prompts, within the KL budget or not, the vectors' norms per site and layer, and
    the whole validation ``grid`` (``layer=…`` → ``m=…`` → rate rise, KL, ok)."""

    RULE: ClassVar[str] = "caa"

    layer: int
    multiplier: float
    site: str
    n_fit: int
    n_validation: int
    within_budget: bool
    max_kl: float
    validation_rate_unsteered: float | None
    validation_rate_rise: float | None
    validation_kl_neutral: float | None
    vector_norms: dict[str, dict[str, float | None]]
    grid: dict[str, dict[str, dict[str, float | bool | None]]]
