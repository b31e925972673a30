"""The few types every part of circuitlab shares, in one small module (no torch).

- `StrictModel`: the base of every config section and artifact schema.
- `TaskRow`: one dataset row, the unit every stage reads.
- `Split`, `Kind`, `Ablation`: the literals several stages accept.
- `NeuronKey`: how a neuron is named everywhere (circuits, steering, the blacklist).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Split = Literal["train", "test"]
Kind = Literal["task", "behaviour"]
#: What a patched edge or an ablated neuron carries instead of its clean value: the corrupt
#: run's value (resample), the mean over the batch's prompts, or zeros.
Ablation = Literal["resample", "mean", "zero"]
#: (layer, end-relative position, neuron index). Position -1 is the last prompt token; None (in
#: steering only) means every position.
NeuronKey = tuple[int, int | None, int]


class StrictModel(BaseModel):
    """Base for every config and artifact schema: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskRow(StrictModel):
    """One row of `data/datasets/{task}.jsonl`.

    `prompt` is continued by `target` (the correct next token, with its leading space) rather
    than `counterfactual` (the competing answer). `corrupt_prompt` has the same template with
    the task-relevant entity changed, for patching. `meta` holds family-specific fields
    (behaviour rows carry `polarity`: "positive" for the behaviour, "negative" for its contrast).
    """

    id: str = Field(min_length=1)
    split: Split
    prompt: str = Field(min_length=1)
    target: str = Field(min_length=1)
    counterfactual: str = Field(min_length=1)
    corrupt_prompt: str = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _target_differs(self) -> TaskRow:
        if self.target == self.counterfactual:
            raise ValueError(f"target and counterfactual are both {self.target!r}")
        return self
