"""``eap``: edge attribution patching (Syed et al. 2023; `circuitlab.acdc.eap`)."""

from __future__ import annotations

from circuitlab.acdc.methods._ranking import AttributionSettings, attribution_run
from circuitlab.acdc.registry import EdgeMethod


class EapSettings(AttributionSettings):
    pass


METHOD = EdgeMethod(
    name="eap",
    summary="edge attribution patching: one forward and one backward give each edge's "
    "first-order effect ⟨ablated − clean source, ∂metric/∂destination input⟩ at the clean run",
    settings=EapSettings,
    run=attribution_run("masks"),
    kind="ranking",
    score="\\|first-order effect\\| (signed scores kept)",
    cost="one forward + one backward, whatever E",
    order=50,
)
