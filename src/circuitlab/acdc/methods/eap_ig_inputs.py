"""``eap_ig_inputs``: EAP with integrated gradients along the ``inputs`` path
(`circuitlab.acdc.eap` module doc)."""

from __future__ import annotations

from pydantic import Field

from circuitlab.acdc.methods._ranking import AttributionSettings, attribution_run
from circuitlab.acdc.registry import EdgeMethod


class EapIgInputsSettings(AttributionSettings):
    steps: int = Field(default=5, ge=1, description="integrated-gradient points (MIB's default: 5)")


METHOD = EdgeMethod(
    name="eap_ig_inputs",
    summary="EAP-IG-inputs (MIB's headline method): only the input embedding moves from its ablated to its clean value in `steps` points; each edge scores ⟨ablated − clean source, ∂metric/∂destination input⟩ averaged over the points",
    settings=EapIgInputsSettings,
    run=attribution_run("inputs"),
    kind="ranking",
    score="\\|score\\| (signed scores kept)",
    cost="`steps` forwards + backwards",
    default=True,
    hooks=False,  # the gradient probe is the native patch layer's
    order=60,
)
