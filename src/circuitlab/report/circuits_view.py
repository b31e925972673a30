"""The report's circuit sections as plain values for the template: the toy model's training,
task accuracy, the blacklist, LRP neuron circuits with their faithfulness, edge circuits (ACDC,
EAP, head pruning) with their evaluation, and the contrastive circuits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from circuitlab.report.format import beats_random, bracket_range, fmt, pct, plus_minus
from circuitlab.report.inline import circuit_graph_svg, data_uri, dot_svg, loss_curve_png, svg_uri

if TYPE_CHECKING:
    from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit
    from circuitlab.acdc.scores import EdgeEvaluation
    from circuitlab.lrp.metrics import FaithfulnessMetrics, LrpCircuitMetrics
    from circuitlab.models.metrics import EvaluationMetrics


def training_view(name: str, t: Mapping[str, Any]) -> dict[str, Any]:
    metrics = t["metrics"]
    png = loss_curve_png(t["curve"], f"{name}: training loss")
    first = next((p.get("loss") for p in t["curve"] if p.get("loss") is not None), None)
    return {
        "metrics": [
            ("final loss", fmt(metrics.final_loss)),
            ("first recorded loss", fmt(first)),
            ("parameters", fmt(metrics.n_parameters)),
            ("vocabulary", fmt(metrics.vocab_size)),
            ("corpus sentences", fmt(metrics.corpus_sentences)),
            ("training time (s)", fmt(metrics.train_seconds)),
        ],
        "plot": data_uri(png) if png else None,
    }


def evaluation_rows(evaluation: Mapping[str, EvaluationMetrics]) -> list[dict[str, str]]:
    return [
        {
            "task": task,
            "test_acc": pct(ev.test.accuracy),
            "train_acc": pct(ev.train.accuracy),
            "pairwise": pct(ev.test.pairwise_accuracy),
            "logit_diff": fmt(ev.test.logit_diff),
            "n": fmt(ev.test.n),
        }
        for task, ev in evaluation.items()
    ]


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
    circuit = lrp["circuit"]
    metrics: LrpCircuitMetrics = lrp["metrics"]
    faith: FaithfulnessMetrics = lrp["faithfulness"]
    ablations = []
    for name, res in faith.ablations.items():
        curve = res.points()
        ablations.append(
            {
                "name": name,
                "area": fmt(res.area),
                "random_area": fmt(res.random_area),
                "beats": bool(res.sizes_beating_random)
                and (res.area or 0) > (res.random_area or 0),
                "smallest": pct(res.smallest_size_reaching_target),
                "sizes_beating_random": f"{res.sizes_beating_random} of {len(curve)}",
                "curve": [
                    {
                        "size": pct(r.size),
                        "n": fmt(r.n_neurons),
                        "faith": fmt(r.faithfulness),
                        "random": plus_minus(r.random_faithfulness, r.random_faithfulness_ci),
                        "drop": fmt(r.removal_drop),
                        "random_drop": plus_minus(r.random_removal_drop, r.random_removal_drop_ci),
                        "beats": r.beats_random,
                    }
                    for r in curve
                ],
            }
        )
    cal = faith.calibration
    calibration = [(k, fmt(v) + bracket_range(cal.bounds(k))) for k, v in cal.rho().items()]
    return {
        "task": task,
        "numbers": [
            ("circuit neurons", fmt(len(circuit))),
            ("share of analysed neurons", pct(metrics.share_of_all_neurons)),
            ("share of total attribution", pct(metrics.share_of_total_attribution)),
            ("blacklisted (skipped)", fmt(metrics.blacklisted)),
            ("discovery prompts (train)", fmt(circuit.n_prompts)),
            ("metric on discovery prompts", fmt(circuit.metric_value)),
            ("test prompts (faithfulness)", fmt(faith.n_test_prompts)),
            ("full-model metric (test)", fmt(faith.metric_full)),
            ("attribution time (s)", fmt(metrics.attribution_seconds)),
        ],
        "per_layer": sorted(circuit.per_layer().items()),
        "top": _neuron_rows(circuit),
        "neurons_plot": data_uri(lrp["neurons_plot"]),
        "faithfulness_plot": data_uri(lrp["faithfulness_plot"]),
        "target": pct(faith.target_faithfulness),
        "ablations": ablations,
        "calibration": calibration,
        "calibration_n": cal.n_neurons,
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


def mib_rows(ev: EdgeEvaluation) -> list[dict[str, Any]]:
    """Every method on MIB's yardstick, best CPR first, then the random baseline: CPR and CMD
    and whether each beats random (CPR above, CMD below the random interval)."""
    mib = ev.mib
    if mib is None:
        return []
    rand = mib.random
    rows = []
    for method in mib.by_cpr():
        c = mib.methods[method]
        rows.append(
            {
                "method": method,
                "cpr": fmt(c.cpr),
                "cmd": fmt(c.cmd),
                "cpr_beats": beats_random(c.cpr, rand.cpr_mean, rand.cpr_ci, higher=True),
                "cmd_beats": beats_random(c.cmd, rand.cmd_mean, rand.cmd_ci, higher=False),
            }
        )
    rows.append(
        {
            "method": "random edges (mean ± 95 %)",
            "cpr": plus_minus(rand.cpr_mean, rand.cpr_ci),
            "cmd": plus_minus(rand.cmd_mean, rand.cmd_ci),
            "cpr_beats": None,
            "cmd_beats": None,
        }
    )
    return rows


def acdc_view(task: str, acdc: Mapping[str, Any]) -> dict[str, Any]:
    ev: EdgeEvaluation = acdc["evaluation"]
    arts = acdc["circuits"]
    agreement = ev.agreement
    ref_method = agreement.reference_method
    if ref_method not in arts:
        ref_method = "acdc" if "acdc" in arts else next(iter(arts), None)
    methods = []
    for method, art in arts.items():
        scores = ev.methods.get(method)
        ref = scores.reference if scores is not None else None
        circuit = art.reference_circuit(ev.reference_tau)
        by_name = art.scores_by_name()
        top_edges = sorted(circuit.kept, key=lambda e: -by_name.get(e, 0.0))
        methods.append(
            {
                "method": method,
                "label": circuit.label,
                "n_kept": len(circuit.kept),
                "fraction": pct(len(circuit.kept) / max(len(art.edges), 1)),
                "recovery": fmt(ref.recovery if ref else None),
                "random_recovery": plus_minus(ref.random.recovery_mean, ref.random.recovery_ci)
                if ref
                else "—",
                "kl": fmt(ref.kl if ref else None),
                "random_kl": plus_minus(ref.random.kl_mean, ref.random.kl_ci) if ref else "—",
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
                "edges": [{"edge": e, "score": fmt(by_name.get(e))} for e in top_edges[:20]],
                "more_edges": max(0, len(top_edges) - 20),
                "is_reference": method == ref_method,
            }
        )
    methods.sort(key=lambda m: (not m["is_reference"],))
    names = list(arts)
    matrix = []
    for a in names:
        row = []
        for b in names:
            if a == b:
                row.append({"text": "1", "shade": 1.0})
                continue
            v = agreement.pair(a, b)
            row.append({"text": fmt(v), "shade": v})
        matrix.append({"method": a, "cells": row})
    return {
        "task": task,
        "mib": mib_rows(ev),
        "numbers": [
            ("graph edges", fmt(ev.n_edges)),
            ("evaluation prompts (test)", fmt(ev.n_prompts)),
            ("ablation", fmt(ev.ablation)),
            ("logit diff, clean", fmt(ev.ld_clean)),
            ("logit diff, all ablated", fmt(ev.ld_ablated)),
            ("KL, all ablated", fmt(ev.kl_ablated)),
        ],
        "methods": methods,
        "plot": data_uri(acdc["plot"]),
        "reference_method": ref_method,
        "jaccard": {"names": names, "rows": matrix} if len(names) > 1 else None,
        "roc_auc": [(m, fmt(v)) for m, v in agreement.roc_auc.items()],
    }


def contrastive_view(behaviour: str, circuit: Any) -> dict[str, Any]:
    return {
        "behaviour": behaviour,
        "n": len(circuit),
        "n_prompts": circuit.n_prompts,
        "per_layer": sorted(circuit.per_layer().items()),
        "top": _neuron_rows(circuit, 10),
    }
