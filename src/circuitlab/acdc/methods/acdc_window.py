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
    # opt-in since issue 29: on a CPU the costliest method of the default run (288 of 1,606
    # CPU-seconds after training, BENCHMARKS.md) and it cannot share checks across τ; its
    # circuits scored at or below exact ACDC's on MIB's CPR in 3 of 4 tasks (RESULTS.md of
    # 6877f0b). On a GPU, where a window is one batched forward, add it to `acdc.methods`
    default=False,
    order=30,
)
