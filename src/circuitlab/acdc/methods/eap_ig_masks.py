"""``eap_ig_masks``: EAP with integrated gradients along the ``masks`` path
(`circuitlab.acdc.eap` module doc)."""

from __future__ import annotations

from pydantic import Field

from circuitlab.acdc.methods._ranking import AttributionSettings, attribution_run
from circuitlab.acdc.registry import EdgeMethod


class EapIgMasksSettings(AttributionSettings):
    steps: int = Field(default=5, ge=1, description="integrated-gradient points (MIB's default: 5)")


METHOD = EdgeMethod(
    name="eap_ig_masks",
    summary="circuitlab's EAP-IG: the gradient of each edge's own mask, averaged over `steps` points where every mask is α·1 (α = k/steps, k = 0…steps−1; one forward): the path from the clean to the fully patched graph. Not MIB's estimator (a mask blends each edge inside a run that is itself partly patched)",
    settings=EapIgMasksSettings,
    run=attribution_run("masks"),
    kind="ranking",
    score="\\|score\\| (signed scores kept)",
    cost="one forward (steps × the batch) + one backward",
    default=False,
    order=55,
)
