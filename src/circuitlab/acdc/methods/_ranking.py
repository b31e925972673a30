"""What the ranking methods share: their circuits (the top fractions of edges by |score|) and
the attribution methods' settings and run. No torch at import."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from circuitlab.types import StrictModel

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext
    from circuitlab.acdc.settings import AcdcConfig


class RankingSettings(StrictModel):
    """A ranking method's circuits: the top ``sizes`` fractions of edges by |score|."""

    sizes: list[float] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
        min_length=1,
        description="circuits kept in the artifact: the top fraction of edges by |score| "
        "(the evaluation also draws MIB's curve over its own percentages)",
    )

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not (math.isfinite(s) and 0 < s <= 1)]
        if bad:
            raise ValueError(f"sizes are fractions of all edges in (0, 1], got {bad}")
        return v


class AttributionSettings(RankingSettings):
    """An attribution method: the metric it differentiates, and its circuits."""

    metric: Literal["logit_diff", "target_logit"] = Field(
        default="logit_diff", description="the metric differentiated"
    )


def top_edges(edges: Sequence[str], scores: Sequence[float], n: int) -> tuple[str, ...]:
    """The ``n`` highest-scoring edges (ties in storage order), returned in storage order."""
    order = sorted(range(len(edges)), key=lambda i: -scores[i])[:n]
    return tuple(edges[i] for i in sorted(order))


def ranked(
    edges: Sequence[str],
    signed: Sequence[float],
    sizes: Sequence[float],
    *,
    sign: str,
    n_forward: int,
    n_backward: int,
    metric_values: dict[str, float],
    details: dict[str, Any],
    score_kind: str = "abs_attribution",
    signed_is_importance: bool = False,
) -> dict[str, Any]:
    """A ranking method's artifact fields. Attribution scores (circuitlab's sign: ≈ metric
    change when the edge is patched): score = |signed|, the signed scores (storage order) and
    their convention kept in ``details``. With ``signed_is_importance`` the values already are
    importances (higher = more important, e.g. learned masks): score = the value itself.
    Circuits at ``sizes`` in both cases."""
    from circuitlab.acdc.artifact import EdgeCircuit

    scores = (
        tuple(float(s) for s in signed) if signed_is_importance else tuple(abs(s) for s in signed)
    )
    counts = sorted({max(1, round(f * len(edges))) for f in sizes})
    circuits = tuple(
        EdgeCircuit(f"top={n}", top_edges(edges, scores, n), None, None) for n in counts
    )
    extra = (
        {"sign": sign} if signed_is_importance else {"sign": sign, "signed_scores": list(signed)}
    )
    return {
        "scores": scores,
        "score_kind": score_kind,
        "circuits": circuits,
        "n_forward": n_forward,
        "n_backward": n_backward,
        "metric_values": metric_values,
        "details": {**details, **extra},
    }


def attribution_run(ig: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` of an attribution method along the IG path ``ig`` (`circuitlab.acdc.eap`;
    ``masks`` with one step is EAP): settings ``metric``, ``sizes`` and ``steps`` (1 if
    absent)."""

    def run(ctx: PatchContext, cfg: AcdcConfig, own: AttributionSettings) -> dict[str, Any]:
        from circuitlab.acdc.eap import SIGN_CONVENTION, EAPConfig, edge_attribution
        from circuitlab.errors import ConfigError

        if ig in ("inputs", "activations") and not ctx.model.supports_dest_gradients:
            raise ConfigError(
                f"EAP-IG-{ig} needs gradients at each destination's input (the gradient "
                "probe of circuitlab's own patch layer); the TransformerLens backend runs eap, "
                "eap_ig_masks and edge_pruning"
            )
        steps = int(getattr(own, "steps", 1))
        res = edge_attribution(ctx, EAPConfig(metric=own.metric, ig_steps=steps, ig=ig))
        return ranked(
            res.edges,
            res.scores,
            own.sizes,
            sign=SIGN_CONVENTION,
            n_forward=res.n_forward,
            n_backward=res.n_backward,
            metric_values={"clean": res.clean_metric},
            details={"metric": res.metric, "ig_steps": res.ig_steps, "ig": ig},
        )

    return run
