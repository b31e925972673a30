"""``eap_ig_activations``: EAP with integrated gradients along the ``activations`` path
(`circuitlab.acdc.eap` module doc)."""

from __future__ import annotations

from pydantic import Field

from circuitlab.acdc.methods._ranking import AttributionSettings, attribution_run
from circuitlab.acdc.registry import EdgeMethod


class EapIgActivationsSettings(AttributionSettings):
    steps: int = Field(default=5, ge=1, description="integrated-gradient points (MIB's default: 5)")


METHOD = EdgeMethod(
    name="eap_ig_activations",
    summary="EAP-IG-activations: each source block in turn (embedding, each layer's heads, each MLP) moves from ablated to clean in `steps` points, everything else as usual; each edge scores the same product averaged over all (2L+1)·steps points",
    settings=EapIgActivationsSettings,
    run=attribution_run("activations"),
    kind="ranking",
    score="\\|score\\| (signed scores kept)",
    cost="(2L + 1) · `steps` forwards + backwards",
    default=True,
    hooks=False,  # the gradient probe is the native patch layer's
    order=70,
)
