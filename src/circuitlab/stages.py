"""The pipeline's stages, keyed by Snakemake rule name: what each one needs and loads.

This table is the one place that knows which rules need circuitlab's architecture adapter and
which load a model's weights. Everything that used to restate it reads it instead: the job
graph (`circuitlab.jobs`: a ``backend: transformer_lens`` model gets only the rules that do
not need the adapter), the CLI's gate on a stage's ``--model`` (`circuitlab.cli.app`), the
TransformerLens backend's list of what it runs (`circuitlab.models.bridge.STAGES`, which the
README's model table is checked against), the report, and the Snakefile (each model-loading
rule's ``gpu`` resource, `workflow/rules/common.smk`).

No torch, no Snakemake: the Snakefile imports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One pipeline rule.

    ``label``: the stage in words, as messages name it ("the neuron blacklist needs …").
    ``needs_adapter``: it works on the MLP internals through circuitlab's architecture adapter,
    so the ``transformer_lens`` backend cannot run it; ``reason`` then says what the adapter
    provides. ``loads_model``: the job loads the model's weights (onto the model entry's
    device), so on a GPU host it takes a GPU (the rule's ``gpu`` resource)."""

    label: str
    needs_adapter: bool
    loads_model: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.needs_adapter != (self.reason is not None):
            raise ValueError(f"{self.label}: a stage needing the adapter says why, no other does")


_LRP = "LRP rules rewrite the norms, attention and MLP modules"

#: Every rule of the workflow, in pipeline order. A rule missing here is a bug
#: (tests/test_stages.py checks the Snakefile's rules against it).
STAGES: dict[str, Stage] = {
    "datasets": Stage("the task datasets", needs_adapter=False, loads_model=False),
    # trains on CPU under the numerics pins (bit-identical weights), whatever the device
    "train_toy_model": Stage("training the embedded model", needs_adapter=False, loads_model=False),
    "model_ref": Stage("the model reference", needs_adapter=False, loads_model=False),
    # built on CPU from a shape file (circuitlab.models.random), whatever the device
    "random_model": Stage("the random model", needs_adapter=False, loads_model=False),
    # the tokenizer only
    "check_dataset": Stage("the dataset check", needs_adapter=False, loads_model=False),
    "evaluate_model": Stage("model evaluation", needs_adapter=False, loads_model=True),
    "blacklist": Stage(
        "the neuron blacklist",
        needs_adapter=True,
        loads_model=True,
        reason="reads every MLP neuron (the down-projection input)",
    ),
    "lrp_attribution": Stage("LRP attribution", needs_adapter=True, loads_model=True, reason=_LRP),
    # selection from saved attributions: no model
    "lrp_circuit": Stage("the LRP circuit", needs_adapter=True, loads_model=False, reason=_LRP),
    "lrp_faithfulness": Stage(
        "LRP faithfulness", needs_adapter=True, loads_model=True, reason=_LRP
    ),
    "contrastive_circuit": Stage(
        "the contrastive neuron circuit",
        needs_adapter=True,
        loads_model=True,
        reason="an LRP neuron circuit",
    ),
    "acdc_circuit": Stage(
        "exact and approximate ACDC, EAP, head pruning", needs_adapter=False, loads_model=True
    ),
    "acdc_evaluate": Stage("edge-circuit evaluation", needs_adapter=False, loads_model=True),
    "steering": Stage(
        "neuron steering", needs_adapter=True, loads_model=True, reason="edits MLP neurons"
    ),
    "caa": Stage("residual and MLP-output CAA vectors", needs_adapter=False, loads_model=True),
    "caa_steering": Stage("CAA steering", needs_adapter=False, loads_model=True),
    "steering_summary": Stage("the steering summary", needs_adapter=False, loads_model=False),
    "compare": Stage(
        "CAA vs circuit",
        needs_adapter=True,
        loads_model=True,
        reason="projects CAA onto W_down, edits MLP neurons",
    ),
    "robustness": Stage("seed robustness", needs_adapter=False, loads_model=False),
    "report": Stage("the report", needs_adapter=False, loads_model=False),
    "record": Stage("the run's record", needs_adapter=False, loads_model=False),
}

#: Rules that need circuitlab's architecture adapter.
ADAPTER_RULES = frozenset(rule for rule, stage in STAGES.items() if stage.needs_adapter)

#: Rules whose job loads the model's weights.
MODEL_RULES = frozenset(rule for rule, stage in STAGES.items() if stage.loads_model)


def hook_only_labels() -> list[str]:
    """What the ``transformer_lens`` backend runs on a model, in words (pipeline order)."""
    return [s.label for s in STAGES.values() if s.loads_model and not s.needs_adapter]


def unavailable_without_adapter() -> str:
    """The rules a ``transformer_lens``-backend model does not get, with why, in one line (the
    Snakefile's note and the report say it)."""
    return "; ".join(f"{rule} ({s.reason})" for rule, s in STAGES.items() if s.needs_adapter)
