"""The report's view model: loaded artifacts → the plain values the template shows (numbers
formatted, intervals written out, figures drawn and inlined). Pure: no disk, no network."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from circuitlab.compare.artifact import CompareReport
from circuitlab.errors import ArtifactError
from circuitlab.report.manifest import LoadedReport, ModelResults
from circuitlab.report.plots import (
    circuit_graph_svg,
    data_uri,
    dose_response_png,
    dot_svg,
    loss_curve_png,
    svg_uri,
)
from circuitlab.steering.artifact import Arm, Interval, SteeringReport

if TYPE_CHECKING:
    from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit


# ------------------------------------------------------------------------------ view model


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: None → '—', ints as is, floats with `digits` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value == 0:
            return "0"
        if abs(value) >= 10 ** (digits + 2) or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f} %"


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


def _ci(mean: Any, half: Any) -> str:
    if mean is None:
        return "—"
    return fmt(mean) if half is None else f"{fmt(mean)} ± {fmt(half, 2)}"


def _training_view(name: str, t: Mapping[str, Any]) -> dict[str, Any]:
    metrics = t["metrics"]
    png = loss_curve_png(t["curve"], f"{name}: training loss")
    first = next((p.get("loss") for p in t["curve"] if p.get("loss") is not None), None)
    return {
        "metrics": [
            ("final loss", fmt(metrics.get("final_loss"))),
            ("first recorded loss", fmt(first)),
            ("parameters", fmt(metrics.get("n_parameters"))),
            ("vocabulary", fmt(metrics.get("vocab_size"))),
            ("corpus sentences", fmt(metrics.get("corpus_sentences"))),
            ("training time (s)", fmt(metrics.get("train_seconds"))),
        ],
        "plot": data_uri(png) if png else None,
    }


def _evaluation_rows(evaluation: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for task, ev in evaluation.items():
        rows.append(
            {
                "task": task,
                "test_acc": pct(_get(ev, "test", "accuracy")),
                "train_acc": pct(_get(ev, "train", "accuracy")),
                "pairwise": pct(_get(ev, "test", "pairwise_accuracy")),
                "logit_diff": fmt(_get(ev, "test", "logit_diff")),
                "n": fmt(_get(ev, "test", "n")),
            }
        )
    return rows


def _blacklist_view(bl: Any) -> dict[str, Any]:
    per_layer: dict[int, int] = {}
    for layer, _ in bl.pairs():
        per_layer[layer] = per_layer.get(layer, 0) + 1
    neurons = sorted(bl.neurons.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "numbers": [
            ("blacklisted neurons", fmt(len(bl.pairs()))),
            ("detected", fmt(len(bl.neurons))),
            ("known (from prior work)", fmt(len(bl.known))),
            ("prompts", fmt(bl.n_prompts)),
            ("top-k per layer and prompt", fmt(bl.top_k)),
            ("universal when in ≥ prompts", f"{fmt(bl.min_count)} ({pct(bl.threshold_fraction)})"),
            ("stability (split halves)", fmt(bl.stability)),
        ],
        "per_layer": [(layer, per_layer.get(layer, 0)) for layer in range(bl.n_layers)],
        "neurons": [
            {"layer": ly, "neuron": n, "count": c, "share": pct(c / max(bl.n_prompts, 1))}
            for (ly, n), c in neurons[:30]
        ],
        "more": max(0, len(neurons) - 30),
        "known": [f"L{ly}.N{n}" for ly, n in bl.known],
    }


def _neuron_rows(circuit: Any, k: int = 12) -> list[dict[str, Any]]:
    return [
        {"layer": ly, "position": p, "neuron": n, "score": fmt(v)}
        for (ly, p, n), v in circuit.top(k)
    ]


def _lrp_view(task: str, lrp: Mapping[str, Any]) -> dict[str, Any]:
    circuit, metrics, faith = lrp["circuit"], lrp["metrics"], lrp["faithfulness"]
    target = faith.get("target_faithfulness")
    ablations = []
    for name, res in (faith.get("ablations") or {}).items():
        curve = sorted((res.get("curve") or {}).values(), key=lambda r: r.get("size", 0))
        ablations.append(
            {
                "name": name,
                "area": fmt(res.get("area")),
                "random_area": fmt(res.get("random_area")),
                "beats": bool(res.get("sizes_beating_random"))
                and (res.get("area") or 0) > (res.get("random_area") or 0),
                "smallest": pct(res.get("smallest_size_reaching_target")),
                "sizes_beating_random": f"{res.get('sizes_beating_random', 0)} of {len(curve)}",
                "curve": [
                    {
                        "size": pct(r.get("size")),
                        "n": fmt(r.get("n_neurons")),
                        "faith": fmt(r.get("faithfulness")),
                        "random": _ci(
                            r.get("random_faithfulness"), r.get("random_faithfulness_ci")
                        ),
                        "drop": fmt(r.get("removal_drop")),
                        "random_drop": _ci(
                            r.get("random_removal_drop"), r.get("random_removal_drop_ci")
                        ),
                        "beats": bool(r.get("beats_random")),
                    }
                    for r in curve
                ],
            }
        )
    cal = faith.get("calibration") or {}
    intervals = cal.get("interval") or {}
    calibration = [
        (k, fmt(v) + _range(intervals.get(k)))
        for k, v in cal.items()
        if k not in ("n_neurons", "sampling") and (v is None or isinstance(v, (int, float)))
    ]
    return {
        "task": task,
        "numbers": [
            ("circuit neurons", fmt(len(circuit))),
            ("share of analysed neurons", pct(metrics.get("share_of_all_neurons"))),
            ("share of total attribution", pct(metrics.get("share_of_total_attribution"))),
            ("blacklisted (skipped)", fmt(metrics.get("blacklisted"))),
            ("discovery prompts (train)", fmt(circuit.n_prompts)),
            ("metric on discovery prompts", fmt(circuit.metric_value)),
            ("test prompts (faithfulness)", fmt(faith.get("n_test_prompts"))),
            ("full-model metric (test)", fmt(faith.get("metric_full"))),
            ("attribution time (s)", fmt(metrics.get("attribution_seconds"))),
        ],
        "per_layer": sorted(circuit.per_layer().items()),
        "top": _neuron_rows(circuit),
        "neurons_plot": data_uri(lrp["neurons_plot"]),
        "faithfulness_plot": data_uri(lrp["faithfulness_plot"]),
        "target": pct(target),
        "ablations": ablations,
        "calibration": calibration,
        "calibration_n": cal.get("n_neurons"),
    }


def _range(interval: Any) -> str:
    """`` [lo, hi]`` of an interval dict, or nothing."""
    if not isinstance(interval, Mapping) or interval.get("lo") is None:
        return ""
    return f" [{fmt(interval['lo'], 2)}, {fmt(interval['hi'], 2)}]"


def _n_layers(edges: Iterable[str]) -> int:
    """Transformer layers of an edge graph, from its node names (``A3.1``, ``MLP 3``)."""
    found = [
        int(m[1]) for e in edges for n in e.split("->") if (m := re.match(r"(?:MLP |A)(\d+)", n))
    ]
    return max(found, default=0) + 1


def _acdc_graph(art: Any, ref: Any, dot_text: str | None) -> str | None:
    """The circuit as a vector figure: Graphviz's rendering of its DOT file when `dot` is
    installed, else circuitlab's layered drawing."""
    svg = dot_svg(dot_text) if dot_text else None
    if svg is None:
        n_layers = _n_layers(art.edges)
        svg = circuit_graph_svg(
            ref.kept, n_layers, f"{art.task}: {art.method} ({ref.label}, {len(ref.kept)} edges)"
        )
    return svg_uri(svg) if svg else None


def _near_tau_checks(art: CircuitArtifact, circuit: EdgeCircuit) -> list[dict[str, str]]:
    """The checks of a traced circuit decided within rounding distance of τ (Δ, margin)."""
    if circuit.trace is None or circuit.tau is None:
        return []
    rows = circuit.trace.rows(art.edges, circuit.tau)
    return [
        {
            "edge": r["edge"],
            "delta": fmt(r["delta"]),
            "margin": f"{r['margin']:+.1e}",
            "decision": "removed" if r["removed"] else "kept",
        }
        for r in rows
        if r["near_tau"]
    ]


def _acdc_view(task: str, acdc: Mapping[str, Any]) -> dict[str, Any]:
    ev = acdc["evaluation"]
    arts = acdc["circuits"]
    if "reference_tau" not in ev:
        raise ArtifactError(
            f"{task}: the edge-circuit evaluation has no reference_tau: it predates the "
            "circuits' format; rerun acdc_evaluate"
        )
    agreement = ev.get("agreement") or {}
    ref_method = agreement.get("reference_method")
    if ref_method not in arts:
        ref_method = "acdc" if "acdc" in arts else next(iter(arts), None)
    methods = []
    for method, art in arts.items():
        res = _get(ev, "methods", method, default={}) or {}
        ref = res.get("reference") or {}
        rnd = ref.get("random") or {}
        circuit = art.reference_circuit(ev["reference_tau"])
        scores = art.scores_by_name()
        top_edges = sorted(circuit.kept, key=lambda e: -scores.get(e, 0.0))
        methods.append(
            {
                "method": method,
                "label": circuit.label,
                "n_kept": len(circuit.kept),
                "fraction": pct(len(circuit.kept) / max(len(art.edges), 1)),
                "recovery": fmt(ref.get("recovery")),
                "random_recovery": _ci(rnd.get("recovery_mean"), rnd.get("recovery_ci")),
                "kl": fmt(ref.get("kl")),
                "random_kl": _ci(rnd.get("kl_mean"), rnd.get("kl_ci")),
                "n_circuits": len(art.circuits),
                "near_tau": fmt(circuit.n_near_tau),
                "near_edges": _near_tau_checks(art, circuit),
                "n_forward": fmt(art.n_forward),
                "n_backward": fmt(art.n_backward),
                "seconds": fmt(art.seconds),
                # one figure per idea: the reference method's circuit is drawn; the others
                # are compared in the tables (their DOT files are in data/circuits/)
                "graph": _acdc_graph(art, circuit, acdc["dots"].get(method))
                if method == ref_method
                else None,
                "edges": [{"edge": e, "score": fmt(scores.get(e))} for e in top_edges[:20]],
                "more_edges": max(0, len(top_edges) - 20),
                "is_reference": method == ref_method,
            }
        )
    methods.sort(key=lambda m: (not m["is_reference"],))
    jaccard = agreement.get("jaccard") or {}
    names = list(arts)
    matrix = []
    for a in names:
        row = []
        for b in names:
            if a == b:
                row.append({"text": "1", "shade": 1.0})
                continue
            v = jaccard.get(f"{a}_vs_{b}", jaccard.get(f"{b}_vs_{a}"))
            row.append({"text": fmt(v), "shade": float(v) if isinstance(v, (int, float)) else None})
        matrix.append({"method": a, "cells": row})
    roc = [(m, fmt(v)) for m, v in (agreement.get("roc_auc") or {}).items()]
    n_edges = ev.get("n_edges") or (len(next(iter(arts.values())).edges) if arts else None)
    return {
        "task": task,
        "numbers": [
            ("graph edges", fmt(n_edges)),
            ("evaluation prompts (test)", fmt(ev.get("n_prompts"))),
            ("ablation", fmt(ev.get("ablation"))),
            ("logit diff, clean", fmt(ev.get("ld_clean"))),
            ("logit diff, all ablated", fmt(ev.get("ld_ablated"))),
            ("KL, all ablated", fmt(ev.get("kl_ablated"))),
        ],
        "methods": methods,
        "plot": data_uri(acdc["plot"]),
        "reference_method": ref_method,
        "jaccard": {"names": names, "rows": matrix} if len(names) > 1 else None,
        "roc_auc": roc,
    }


def _contrastive_view(behaviour: str, circuit: Any) -> dict[str, Any]:
    return {
        "behaviour": behaviour,
        "n": len(circuit),
        "n_prompts": circuit.n_prompts,
        "per_layer": sorted(circuit.per_layer().items()),
        "top": _neuron_rows(circuit, 10),
    }


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _cell(cell: Interval | None) -> str:
    """``mean [lo, hi]`` of a bootstrap interval."""
    if cell is None:
        return "—"
    return f"{fmt(cell.mean)} [{fmt(cell.lo, 2)}, {fmt(cell.hi, 2)}]"


def _steering_row(method: str, r: SteeringReport) -> dict[str, Any]:
    """One steering report (`circuitlab.steering`): the verdicts at the strongest suppression
    and amplification (and CAA's chosen multiplier) against the random control."""
    if r.steering == "vector":
        what = f"CAA vector, layer {fmt(r.layer)}, norm {fmt(r.vector_norm)}"
    else:
        what = f"{fmt(r.n_neurons)} neurons ({r.positions} positions)"
    arms = []
    for label in ("suppress", "amplify", "chosen"):
        arm: Arm | None = getattr(r.summary, label)
        if arm is None:
            continue
        arms.append(
            {
                "label": "chosen (validation)" if label == "chosen" else label,
                "multiplier": fmt(arm.multiplier),
                "steered": _cell(arm.steered_effect),
                "control": _cell(arm.control_effect),
                "delta": _cell(arm.delta),
                "beats": arm.beats_control,
                "kl": fmt(arm.kl_neutral),
                "kl_control": fmt(arm.kl_neutral_control),
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


def _steering_view(key: str, st: Mapping[str, Any]) -> dict[str, Any]:
    plots = dict(st["plots"])
    methods = []
    for k, r in st["results"].items():
        row = _steering_row(k, r)
        png = plots.pop(k, None)
        row["plot"] = data_uri(png) if png is not None else None
        methods.append(row)
    return {"key": key, "methods": methods, "plots": [data_uri(p) for p in plots.values()]}


def _steering_summary_view(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    verdicts = []
    for row, v in (summary["metrics"].get("verdicts") or {}).items():
        verdicts.append(
            {
                "row": row,
                "primary": str(v.get("primary", "—")).replace("_", " "),
                "suppress": v.get("suppress_beats_control"),
                "suppress_delta": fmt(v.get("suppress_delta")),
                "amplify": v.get("amplify_beats_control"),
                "amplify_delta": fmt(v.get("amplify_delta")),
            }
        )
    return {"verdicts": verdicts, "plot": data_uri(summary["plot"])}


def _compare_view(key: str, cmp: Mapping[str, Any]) -> dict[str, Any]:
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
        faith = _get(lrp, "faithfulness", "ablations", default={}) if lrp else {}
        first = next(iter(faith.values()), {}) if faith else {}
        acdc = m.acdc.get(task)
        ref = {}
        ref_method = None
        if acdc:
            ref_method = _get(acdc, "evaluation", "agreement", "reference_method")
            if ref_method not in acdc["circuits"]:
                ref_method = next(iter(acdc["circuits"]), None)
            ref = _get(acdc, "evaluation", "methods", ref_method or "", "reference", default={})
        results = m.steering[task]["results"] if task in m.steering else {}
        st_method = "lrp" if "lrp" in results else next(iter(results), None)
        suppress = results[st_method].summary.suppress if st_method else None
        steer = "—"
        if suppress is not None:
            verdict = "beats control" if suppress.beats_control else "not beyond control"
            steer = f"Δ {fmt(suppress.delta.mean)} ({st_method}, {verdict})"
        rows.append(
            {
                "task": task,
                "steering": steer,
                "test_acc": pct(_get(m.evaluation.get(task), "test", "accuracy")),
                "lrp_n": fmt(len(lrp["circuit"])) if lrp else "—",
                "lrp_area": (
                    f"{fmt(first.get('area'))} vs {fmt(first.get('random_area'))}" if first else "—"
                ),
                "acdc": (f"{fmt(ref.get('n_edges'))} edges ({ref_method})" if ref else "—"),
                "recovery": (
                    f"{fmt(ref.get('recovery'))} vs {fmt(_get(ref, 'random', 'recovery_mean'))}"
                    if ref
                    else "—"
                ),
            }
        )
    return rows


def _unavailable(backend: str) -> str | None:
    """The stages a backend does not run, in words (None for the native backend)."""
    if backend == "native":
        return None
    from circuitlab.models.bridge import STAGES

    return "; ".join(stage for stage, why in STAGES.items() if why)


def _headline(m: ModelResults) -> dict[str, Any] | None:
    """The first screen's two answers. Which circuits beat their controls: every steering
    report's verdict at its strongest suppression and amplification (steered − matched random
    control, bootstrap interval over test prompts). CAA vs circuit: per behaviour and
    direction, each method's side effect at the effect every method reaches."""
    beats = []
    for name, st in m.steering.items():
        for method, r in st["results"].items():
            row: dict[str, Any] = {
                "name": name,
                "method": method,
                "metric": r.summary.primary.replace("_", " "),
            }
            for label in ("suppress", "amplify"):
                arm: Arm | None = getattr(r.summary, label)
                row[label] = _cell(arm.delta) if arm else "—"
                row[f"{label}_beats"] = arm.beats_control if arm else None
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
    return {
        "beats": beats,
        "n_beat": sum(bool(r["suppress_beats"]) or bool(r["amplify_beats"]) for r in beats),
        "matched": matched,
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
                "training": _training_view(name, m.training) if m.training else None,
                "evaluation": _evaluation_rows(m.evaluation),
                "blacklist": _blacklist_view(m.blacklist) if m.blacklist is not None else None,
                "lrp": [_lrp_view(t, v) for t, v in m.lrp.items()],
                "acdc": [_acdc_view(t, v) for t, v in m.acdc.items()],
                "contrastive": [_contrastive_view(b, c) for b, c in m.contrastive.items()],
                "steering": [_steering_view(k, v) for k, v in m.steering.items()],
                "steering_summary": _steering_summary_view(m.steering_summary),
                "compare": [_compare_view(k, v) for k, v in m.compare.items()],
            }
        )
    return {"title": loaded.title, "models": models, "timing": _timing_view(loaded.benchmarks)}
