"""The report's circuit sections as plain values for the template: the toy model's training,
task accuracy, the blacklist, LRP neuron circuits with their faithfulness, edge circuits (ACDC,
EAP, head pruning) with their evaluation, and the contrastive circuits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from circuitlab.errors import ArtifactError
from circuitlab.report.format import bracket_range, dig, fmt, pct, plus_minus
from circuitlab.report.plots import circuit_graph_svg, data_uri, dot_svg, loss_curve_png, svg_uri

if TYPE_CHECKING:
    from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit


def training_view(name: str, t: Mapping[str, Any]) -> dict[str, Any]:
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


def evaluation_rows(evaluation: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for task, ev in evaluation.items():
        rows.append(
            {
                "task": task,
                "test_acc": pct(dig(ev, "test", "accuracy")),
                "train_acc": pct(dig(ev, "train", "accuracy")),
                "pairwise": pct(dig(ev, "test", "pairwise_accuracy")),
                "logit_diff": fmt(dig(ev, "test", "logit_diff")),
                "n": fmt(dig(ev, "test", "n")),
            }
        )
    return rows


def blacklist_view(bl: Any) -> dict[str, Any]:
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


def lrp_view(task: str, lrp: Mapping[str, Any]) -> dict[str, Any]:
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
                        "random": plus_minus(
                            r.get("random_faithfulness"), r.get("random_faithfulness_ci")
                        ),
                        "drop": fmt(r.get("removal_drop")),
                        "random_drop": plus_minus(
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
        (k, fmt(v) + bracket_range(intervals.get(k)))
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


def _n_layers(edges: Iterable[str]) -> int:
    """Transformer layers of an edge graph, from its node names (``A3.1``, ``MLP 3``)."""
    found = [
        int(m[1]) for e in edges for n in e.split("->") if (m := re.match(r"(?:MLP |A)(\d+)", n))
    ]
    return max(found, default=0) + 1


def acdc_graph(art: Any, ref: Any, dot_text: str | None) -> str | None:
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


def acdc_view(task: str, acdc: Mapping[str, Any]) -> dict[str, Any]:
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
        res = dig(ev, "methods", method, default={}) or {}
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
                "random_recovery": plus_minus(rnd.get("recovery_mean"), rnd.get("recovery_ci")),
                "kl": fmt(ref.get("kl")),
                "random_kl": plus_minus(rnd.get("kl_mean"), rnd.get("kl_ci")),
                "n_circuits": len(art.circuits),
                "near_tau": fmt(circuit.n_near_tau),
                "near_edges": _near_tau_checks(art, circuit),
                "n_forward": fmt(art.n_forward),
                "n_backward": fmt(art.n_backward),
                "seconds": fmt(art.seconds),
                # one figure per idea: the reference method's circuit is drawn; the others
                # are compared in the tables (their DOT files are in data/circuits/)
                "graph": acdc_graph(art, circuit, acdc["dots"].get(method))
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


def contrastive_view(behaviour: str, circuit: Any) -> dict[str, Any]:
    return {
        "behaviour": behaviour,
        "n": len(circuit),
        "n_prompts": circuit.n_prompts,
        "per_layer": sorted(circuit.per_layer().items()),
        "top": _neuron_rows(circuit, 10),
    }
