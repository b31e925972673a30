"""Settings of the datasets stage: one section per registered task family (`tasks`,
`behaviours`) and how rows a model cannot tokenize are handled (`datasets`). Sections are built
from the registry, so adding a family needs no edit here. No torch here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from circuitlab.tasks.base import families
from circuitlab.types import StrictModel


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
