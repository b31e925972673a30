"""``acdc_window``: ACDC approximated by testing windows of edges independently
(`circuitlab.acdc.approx`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from circuitlab.acdc.methods._sweep import SWEEP_KEYS, from_sweep, sweep_config
from circuitlab.acdc.registry import EdgeMethod
from circuitlab.types import StrictModel

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext
    from circuitlab.acdc.settings import AcdcConfig


class AcdcWindowSettings(StrictModel):
    window: int = Field(default=16, ge=1, description="edges tested per forward")


def run(ctx: PatchContext, cfg: AcdcConfig, own: AcdcWindowSettings) -> dict[str, Any]:
    from circuitlab.acdc.approx import ApproxConfig, approx_acdc

    return from_sweep(approx_acdc(ctx, sweep_config(cfg), ApproxConfig("window", own.window)))


METHOD = EdgeMethod(
    name="acdc_window",
    summary="ACDC approximated by testing a window of edges at once, each against the same state",
    settings=AcdcWindowSettings,
    run=run,
    kind="sweep",
    score="as `acdc`",
    cost="≈ E / `window` forwards per τ",
    shared=SWEEP_KEYS,
    order=30,
)
