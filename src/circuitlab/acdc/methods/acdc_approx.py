"""``acdc_approx``: ACDC approximated by group testing (`circuitlab.acdc.approx`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from circuitlab.acdc.methods._sweep import SWEEP_KEYS, from_sweep, sweep_config
from circuitlab.acdc.registry import EdgeMethod
from circuitlab.types import StrictModel

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext
    from circuitlab.acdc.settings import AcdcConfig


class AcdcApproxSettings(StrictModel):
    window: int = Field(default=16, ge=1, description="largest group of edges per forward")
    variant: Literal["group", "guided"] = Field(
        default="guided",
        description="plain group testing (fixed groups of `window`, bisected on failure) or "
        "gradient-guided (groups drawn by an EAP-IG estimate of each edge's effect: an edge "
        "estimated at ≥ risk·τ is checked alone, others grouped while their summed estimate "
        "stays below it, at most `window` per group)",
    )
    risk: float = Field(
        default=0.5,
        gt=0,
        allow_inf_nan=False,
        description="guided: a group's summed estimated effect stays below risk·τ",
    )


def run(ctx: PatchContext, cfg: AcdcConfig, own: AcdcApproxSettings) -> dict[str, Any]:
    from circuitlab.acdc.approx import ApproxConfig, approx_acdc

    opts = ApproxConfig(variant=own.variant, window=own.window, risk=own.risk)
    return from_sweep(approx_acdc(ctx, sweep_config(cfg), opts))


METHOD = EdgeMethod(
    name="acdc_approx",
    summary="ACDC approximated by group testing: groups of edges removed together when the "
    "group passes, bisected when it fails (`variant: guided` draws the groups from a "
    "gradient estimate)",
    settings=AcdcApproxSettings,
    run=run,
    kind="sweep",
    score="as `acdc`",
    cost="≈ E / `window` forwards per τ (fewer when most edges go together)",
    shared=SWEEP_KEYS,
    order=20,
)
