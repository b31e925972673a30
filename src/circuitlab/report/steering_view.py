"""The report's steering sections as plain values for the template: each steering report's
verdicts against its random control, the steering summary, and CAA vs circuit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circuitlab.compare.artifact import CompareReport
from circuitlab.report.format import fmt, interval_cell, pct
from circuitlab.report.inline import data_uri, dose_response_png
from circuitlab.steering.artifact import Arm, SteeringReport, SteeringSummary


def verdict_text(beats: bool | None, in_budget: bool | None) -> str:
    """A verdict cell: yes / no / no multiplier within the budget / — (not steered that way)."""
    if beats is None:
        return "—"
    if in_budget is False:
        return "none in budget"
    return "yes" if beats else "no"


def _steering_row(method: str, r: SteeringReport) -> dict[str, Any]:
    """One steering report (`circuitlab.steering`): each direction's verdict at its best
    multiplier within the side-effect budget (and CAA's chosen multiplier) against the random
    control."""
    if r.steering == "vector":
        what = f"CAA vector, layer {fmt(r.layer)}, norm {fmt(r.vector_norm)}"
    else:
        what = f"{fmt(r.n_neurons)} neurons ({r.positions} positions)"
        if r.signs is not None:
            steered = ", ".join(
                f"{label} scales {fmt(r.signs.n_steered[label])} ({which})"
                for label, which in r.signs.signs.items()
            )
            agree = r.signs.sign_agreement
            stored = f"; the stored sign agrees for {pct(agree)}" if agree is not None else ""
            what += f"; {steered}, support by {r.signs.support}{stored}"
    arms = []
    for label in ("suppress", "amplify", "chosen"):
        arm: Arm | None = getattr(r.summary, label)
        if arm is None:
            continue
        arms.append(
            {
                "label": "chosen (validation)" if label == "chosen" else label,
                "multiplier": fmt(arm.multiplier),
                "steered": interval_cell(arm.steered_effect),
                "control": interval_cell(arm.control_effect),
                "delta": interval_cell(arm.delta),
                "beats": arm.beats_control,
                "verdict": verdict_text(arm.beats_control, arm.in_budget),
                "kl": fmt(arm.kl_neutral),
                "kl_control": fmt(arm.kl_neutral_control),
                "drop": pct(arm.accuracy_drop),
                "over": _over_budget(r, label),
            }
        )
    return {
        "method": method,
        "what": what,
        "primary": r.summary.primary.replace("_", " "),
        "unsteered": fmt(r.summary.unsteered),
        "n_test": fmt(r.n_test),
        "multipliers": ", ".join(fmt(m) for m in r.multipliers),
        "seeds": fmt(r.random_seeds),
        "arms": arms,
    }


def _over_budget(r: SteeringReport, label: str) -> str:
    """The multipliers of a direction left out for their side effects, and why, e.g.
    ``×4 (another task −45.3 %), ×8 (KL 17.3)``: what the budget cost this row."""
    if label == "chosen":
        return ""
    sign = 1 if label == "amplify" else -1
    out = []
    for m in r.multipliers:
        cost = r.budget.multipliers.get(f"m={m:g}")
        if cost is None or cost.in_budget or (m - r.unsteered_multiplier) * sign <= 0:
            continue
        why = []
        if cost.kl_neutral > r.budget.max_kl:
            why.append(f"KL {fmt(cost.kl_neutral)}")
        if cost.accuracy_drop > r.budget.max_accuracy_drop:
            why.append(f"another task −{pct(cost.accuracy_drop)}")
        out.append(f"×{fmt(m)} ({', '.join(why)})")
    return ", ".join(out)


def steering_view(key: str, st: Mapping[str, Any]) -> dict[str, Any]:
    plots = dict(st["plots"])
    methods = []
    for k, r in st["results"].items():
        row = _steering_row(k, r)
        png = plots.pop(k, None)
        row["plot"] = data_uri(png) if png is not None else None
        methods.append(row)
    return {"key": key, "methods": methods, "plots": [data_uri(p) for p in plots.values()]}


def steering_summary_view(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    metrics: SteeringSummary = summary["metrics"]
    verdicts = [
        {
            "row": row,
            "primary": v.primary.replace("_", " "),
            "suppress": v.suppress_beats_control,
            "suppress_text": verdict_text(v.suppress_beats_control, v.suppress_in_budget),
            "suppress_delta": fmt(v.suppress_delta) if v.suppress_in_budget is not False else "—",
            "amplify": v.amplify_beats_control,
            "amplify_text": verdict_text(v.amplify_beats_control, v.amplify_in_budget),
            "amplify_delta": fmt(v.amplify_delta) if v.amplify_in_budget is not False else "—",
        }
        for row, v in metrics.verdicts.items()
    ]
    return {"verdicts": verdicts, "plot": data_uri(summary["plot"])}


def compare_view(key: str, cmp: Mapping[str, Any]) -> dict[str, Any]:
    """CAA vs circuit (`circuitlab.compare`): overlap with nulls, matched-effect side effects,
    the multiplier sweep of every method, and the stage's own figures."""
    r: CompareReport = cmp["result"]
    chosen = " (chosen by effect)" if r.caa.layer_chosen else ""
    facts = [
        ("test prompts", fmt(r.n_test_prompts)),
        ("neutral prompts", fmt(r.n_neutral_prompts)),
        ("CAA layer", fmt(r.caa.layer) + chosen),
        ("CAA vector norm", fmt(r.caa.vector_norm)),
        *((f"{c} circuit neurons", fmt(n)) for c, n in r.circuit_sizes.items()),
    ]
    overlap = [
        {
            "circuit": circuit,
            "vector": vector,
            "total": f"{fmt(o.total_overlap)} / {fmt(o.total_checked)}",
            "total_null": fmt(o.total_overlap_null_mean),
            "total_p": fmt(o.total_overlap_p),
            "ve": pct(o.mean_variance_explained),
            "ve_null": pct(o.mean_variance_explained_null_mean),
            "ve_p": fmt(o.mean_variance_explained_p),
            "top": f"{fmt(o.top_overlap)} / {fmt(o.top_overlap_of)}",
            "top_null": fmt(o.top_overlap_null_mean),
            "top_p": fmt(o.top_overlap_p),
        }
        for circuit, per_vector in r.overlap.items()
        for vector, o in per_vector.items()
    ]
    matched = [
        {
            "direction": direction,
            "target": fmt(entry.effect),
            "method": method,
            "max_effect": fmt(m.max_effect),
            "kl": fmt(m.kl),
            "per_kl": fmt(m.effect_per_kl),
            "best": method == entry.best,
        }
        for direction, entry in r.matched.items()
        for method, m in entry.methods.items()
    ]
    curves = {
        method: sorted(
            (p.multiplier, p.effect, p.effect_lo, p.effect_hi)
            for p in points.values()
            if p.effect is not None
        )
        for method, points in r.sweep.items()
    }
    png = dose_response_png(
        curves, "behaviour effect (Δ logit diff)", f"{key}: effect against multiplier"
    )
    return {
        "key": key,
        "facts": facts,
        "overlap": overlap,
        "matched": matched,
        "sweep_plot": data_uri(png) if png else None,
        "neutral": [(k, fmt(v)) for k, v in r.neutral_multiplier.items()],
        "plots": [data_uri(p) for p in cmp["plots"]],
    }
