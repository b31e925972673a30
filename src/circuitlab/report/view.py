"""The report's view model: loaded artifacts → the plain values the template shows (numbers
formatted, intervals written out, figures drawn and inlined). Pure: no disk, no network.

This module builds the page (`build_view`): the first screen's headline, the per-model summary
and the timing table; each section's view is in `circuitlab.report.circuits_view` or
`circuitlab.report.steering_view`, and how values are written in `circuitlab.report.format`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from circuitlab.compare.artifact import CompareReport
from circuitlab.report.circuits_view import (
    acdc_view,
    blacklist_view,
    contrastive_view,
    evaluation_rows,
    lrp_view,
    training_view,
)
from circuitlab.report.format import fmt, interval_cell, pct
from circuitlab.report.inline import data_uri
from circuitlab.report.manifest import LoadedReport, ModelResults
from circuitlab.report.steering_view import compare_view, steering_summary_view, steering_view
from circuitlab.steering.artifact import Arm

if TYPE_CHECKING:
    from circuitlab.acdc.scores import EdgeEvaluation

__all__ = ["build_view", "fmt", "pct"]


def _timing_view(benchmarks: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    rows: dict[str, dict[str, Any]] = {}
    for b in benchmarks:
        r = rows.setdefault(b["rule"], {"rule": b["rule"], "jobs": 0, "total": 0.0, "max": 0.0,
                                        "slowest": "", "rss": None, "cpu": 0.0})  # fmt: skip
        s = b.get("s") or 0.0
        r["jobs"] += 1
        r["total"] += s
        r["cpu"] += b.get("cpu_time") or 0.0
        if s >= r["max"]:
            r["max"], r["slowest"] = s, b["job"]
        if b.get("max_rss") is not None:
            r["rss"] = max(r["rss"] or 0.0, b["max_rss"])
    if not rows:
        return None
    total = sum(r["total"] for r in rows.values())
    out = []
    for r in sorted(rows.values(), key=lambda r: -r["total"]):
        out.append(
            {
                "rule": r["rule"],
                "jobs": r["jobs"],
                "total": fmt(r["total"]),
                "mean": fmt(r["total"] / r["jobs"]),
                "max": fmt(r["max"]),
                "slowest": r["slowest"],
                "rss": fmt(r["rss"]),
                "cpu": fmt(r["cpu"]),
                "share": 100 * r["total"] / total if total else 0.0,
            }
        )
    return {"rows": out, "total": fmt(total), "n_jobs": sum(r["jobs"] for r in rows.values())}


def _summary_rows(name: str, m: ModelResults) -> list[dict[str, str]]:
    tasks = list(dict.fromkeys([*m.evaluation, *m.lrp, *m.acdc, *m.steering]))
    rows = []
    for task in tasks:
        lrp = m.lrp.get(task)
        curves = lrp["faithfulness"].ablations if lrp else {}
        first = next(iter(curves.values()), None)
        acdc = m.acdc.get(task)
        ref, ref_method = None, None
        best_cpr = "—"
        if acdc:
            ev: EdgeEvaluation = acdc["evaluation"]
            ranked = ev.mib.by_cpr() if ev.mib is not None else []
            if ev.mib is not None and ranked:
                top = ranked[0]
                rand = ev.mib.random.cpr_mean
                best_cpr = f"{top} {fmt(ev.mib.methods[top].cpr)} vs {fmt(rand)}"
            ref_method = ev.agreement.reference_method
            if ref_method not in acdc["circuits"]:
                ref_method = next(iter(acdc["circuits"]), None)
            scores = ev.methods.get(ref_method or "")
            ref = scores.reference if scores is not None else None
        results = m.steering[task]["results"] if task in m.steering else {}
        st_method = "lrp" if "lrp" in results else next(iter(results), None)
        suppress = results[st_method].summary.suppress if st_method else None
        steer = "—"
        if suppress is not None:
            verdict = "beats control" if suppress.beats_control else "not beyond control"
            steer = f"Δ {fmt(suppress.delta.mean)} ({st_method}, {verdict})"
        evaluation = m.evaluation.get(task)
        rows.append(
            {
                "task": task,
                "steering": steer,
                "test_acc": pct(evaluation.test.accuracy) if evaluation else "—",
                "lrp_n": fmt(len(lrp["circuit"])) if lrp else "—",
                "lrp_area": f"{fmt(first.area)} vs {fmt(first.random_area)}" if first else "—",
                "acdc": f"{fmt(ref.n_edges)} edges ({ref_method})" if ref else "—",
                "recovery": f"{fmt(ref.recovery)} vs {fmt(ref.random.recovery_mean)}"
                if ref
                else "—",
                "best_cpr": best_cpr,
            }
        )
    return rows


def _unavailable(backend: str) -> str | None:
    """The stages a backend does not run, in words (None for the native backend)."""
    if backend == "native":
        return None
    from circuitlab.stages import unavailable_without_adapter

    return unavailable_without_adapter()


def arm_cell(arm: Arm | None) -> str:
    """One direction's verdict in words: Δ beyond control with its interval at the multiplier it
    was judged at, or that no multiplier of that direction fits the side-effect budget."""
    if arm is None:
        return "—"
    if not arm.in_budget:
        return f"no multiplier within budget (mildest ×{fmt(arm.multiplier)}: KL {fmt(arm.kl_neutral)})"
    return f"{interval_cell(arm.delta)} at ×{fmt(arm.multiplier)}"


def _headline(m: ModelResults) -> dict[str, Any] | None:
    """The first screen's two answers. Which circuits beat their controls: every steering
    report's verdict per direction at its best multiplier within the side-effect budget
    (steered − matched random control, bootstrap interval over test prompts); a point outside
    the budget is never counted. CAA vs circuit: per behaviour and direction, each method's side
    effect at the effect every method reaches within the budget."""
    beats = []
    budget = None
    for name, st in m.steering.items():
        for method, r in st["results"].items():
            budget = budget or r.budget
            row: dict[str, Any] = {
                "name": name,
                "method": method,
                "metric": r.summary.primary.replace("_", " "),
            }
            for label in ("suppress", "amplify"):
                arm: Arm | None = getattr(r.summary, label)
                row[label] = arm_cell(arm)
                row[f"{label}_beats"] = arm.beats_control if arm else None
                row[f"{label}_none"] = arm is not None and not arm.in_budget
            beats.append(row)
    matched = []
    for behaviour, cmp in m.compare.items():
        report: CompareReport = cmp["result"]
        for direction, entry in report.matched.items():
            kls = {k: v.kl for k, v in entry.methods.items()}
            circuit = {k: v for k, v in kls.items() if k != "caa" and v is not None}
            best_circuit = min(circuit, key=circuit.__getitem__) if circuit else None
            matched.append(
                {
                    "behaviour": behaviour,
                    "direction": direction,
                    "effect": fmt(entry.effect),
                    "caa_kl": fmt(kls.get("caa")),
                    "circuit": best_circuit or "—",
                    "circuit_kl": fmt(circuit[best_circuit]) if best_circuit else "—",
                    "best": entry.best or "—",
                }
            )
    if not beats and not matched:
        return None
    arms = [r[f"{k}_beats"] for r in beats for k in ("suppress", "amplify")]
    return {
        "beats": beats,
        "n_beat": sum(bool(r["suppress_beats"]) or bool(r["amplify_beats"]) for r in beats),
        "n_arms": sum(a is not None for a in arms),
        "n_arms_beat": sum(bool(a) for a in arms),
        "n_none": sum(bool(r[f"{k}_none"]) for r in beats for k in ("suppress", "amplify")),
        "max_kl": fmt(budget.max_kl) if budget else "—",
        "max_drop": pct(budget.max_accuracy_drop) if budget else "—",
        "matched": matched,
    }


def robustness_view(robust: dict[str, Any] | None) -> dict[str, Any] | None:
    """`make robustness`: how many verdicts hold on every training seed, each verdict's value
    per seed and the spread of its figure, the verdicts that differ first."""
    if robust is None:
        return None
    from circuitlab.robustness.artifact import RobustnessSummary

    summary: RobustnessSummary = robust["metrics"]
    seeds = [str(s) for s in summary.seeds]

    def cell(value: Any) -> str:
        return "—" if value is None else fmt(value)

    rows = [
        {
            "verdict": key,
            "robust": v.robust,
            "agree": f"{v.agree} / {len(seeds)}",
            "cells": [cell(v.values.get(s)) for s in seeds],
            "spread": f"{fmt(v.spread.mean)} (sd {fmt(v.spread.sd)}; {fmt(v.spread.min)} … "
            f"{fmt(v.spread.max)})",
        }
        for key, v in sorted(summary.verdicts.items(), key=lambda kv: (kv[1].robust, kv[0]))
    ]
    return {
        "seeds": [f"{s} ({summary.models[s]})" for s in seeds],
        "n_robust": summary.n_robust,
        "n_verdicts": summary.n_verdicts,
        "rows": rows,
        "plot": data_uri(robust["plot"]),
    }


def build_view(loaded: LoadedReport) -> dict[str, Any]:
    models = []
    for name, m in loaded.models.items():
        models.append(
            {
                "name": name,
                "headline": _headline(m),
                "unavailable": _unavailable(m.backend),
                "summary": _summary_rows(name, m),
                "training": training_view(name, m.training) if m.training else None,
                "evaluation": evaluation_rows(m.evaluation),
                "blacklist": blacklist_view(m.blacklist) if m.blacklist is not None else None,
                "lrp": [lrp_view(t, v) for t, v in m.lrp.items()],
                "acdc": [acdc_view(t, v) for t, v in m.acdc.items()],
                "contrastive": [contrastive_view(b, c) for b, c in m.contrastive.items()],
                "steering": [steering_view(k, v) for k, v in m.steering.items()],
                "steering_summary": steering_summary_view(m.steering_summary),
                "compare": [compare_view(k, v) for k, v in m.compare.items()],
                "robustness": robustness_view(m.robustness),
            }
        )
    return {"title": loaded.title, "models": models, "timing": _timing_view(loaded.benchmarks)}
