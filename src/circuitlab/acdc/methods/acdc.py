"""``acdc``: exact ACDC (Conmy et al. 2023), computed by `circuitlab.acdc.fast` — the same
decisions as the sequential algorithm, cheaper."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from circuitlab.acdc.methods._sweep import SWEEP_KEYS, from_sweep, sweep_config
from circuitlab.acdc.registry import EdgeMethod
from circuitlab.types import StrictModel

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext
    from circuitlab.acdc.settings import AcdcConfig


class AcdcSettings(StrictModel):
    window: int | None = Field(
        default=None,
        ge=1,
        description="fixed speculation window (null: adaptive on a GPU, 1 on a CPU, where "
        "batched candidates cost more than single checks)",
    )
    max_window: int = Field(default=16, ge=1, description="largest speculation window")
    trace: bool = Field(
        default=True,
        description="keep the per-edge trace (faithfulness, Δ, decision, near-τ flag of every "
        "check) in the circuit artifact",
    )


def run(ctx: PatchContext, cfg: AcdcConfig, own: AcdcSettings) -> dict[str, Any]:
    from circuitlab.acdc.fast import FastConfig, fast_acdc

    opts = FastConfig(window=own.window, max_window=own.max_window)
    return from_sweep(fast_acdc(ctx, sweep_config(cfg, trace=own.trace), opts))


METHOD = EdgeMethod(
    name="acdc",
    summary="exact ACDC: for each τ of the sweep, visit edges from the output backwards and "
    "remove one if the KL (or MSE) to the clean logits rises by less than τ; the same "
    "decisions as the sequential algorithm (tested edge for edge), shared checks across τ",
    settings=AcdcSettings,
    run=run,
    kind="sweep",
    score="the smallest τ that removed the edge (`inf`: never removed)",
    cost="≥ one forward per edge and distinct sweep state",
    shared=SWEEP_KEYS,
    order=10,
)
