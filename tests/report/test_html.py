"""The HTML report: renders every section from synthetic artifacts, is self-contained, shows
each section's key numbers, and a missing or malformed input is a clear error with no file."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit, save_circuit, to_dot
from circuitlab.acdc.trace import EdgeTrace
from circuitlab.blacklist.artifact import Blacklist
from circuitlab.compare.settings import CompareConfig
from circuitlab.errors import ArtifactError, ConfigError
from circuitlab.io import write_json, write_text_atomic
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.report.inline import circuit_graph_svg
from circuitlab.report.manifest import load_report_inputs, manifest_paths, parse_manifest
from circuitlab.report.render import render_report, write_report
from circuitlab.report.view import fmt
from cli_support import run
from report.selfcontained import assert_self_contained

METHODS = ("acdc", "eap")
EDGES = (
    "Resid Start->A0.0.Q", "Resid Start->A0.1.V", "Resid Start->MLP 0", "A0.0->MLP 0",
    "A0.1->MLP 0", "A0.0->Resid End", "A0.1->Resid End", "MLP 0->Resid End",
)  # fmt: skip


def tiny_png(seed: int = 0) -> bytes:
    """A valid 2×2 RGB PNG, written by hand (no plotting needed for inputs)."""
    raw = b"".join(b"\x00" + bytes([seed % 256, 40, 90] * 2) for _ in range(2))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def faithfulness_report() -> dict[str, Any]:
    def row(size: float, f: float, rf: float, beats: bool) -> dict[str, Any]:
        return {
            "size": size, "n_neurons": int(size * 1000), "faithfulness": f,
            "random_faithfulness": rf, "random_faithfulness_ci": 0.05, "removal_drop": 0.7,
            "random_removal_drop": 0.2, "random_removal_drop_ci": 0.04, "beats_random": beats,
            "margin": f - rf, "metric_keep": 1.0, "metric_removed": 0.1,
        }  # fmt: skip

    return {
        "ablations": {
            "mean": {
                "area": 0.8123,
                "random_area": 0.3141,
                "curve": {"0.01": row(0.01, 0.55, 0.1, True), "0.1": row(0.1, 0.91, 0.4, True)},
                "sizes_beating_random": 2,
                "smallest_size_reaching_target": 0.1,
                "metric_none": 0.0,
            }
        },
        "calibration": {
            "grad_x_act": 0.61, "lrp_half": 0.7342, "n_neurons": 20, "sampling": "x",
            "interval": {"kind": "bootstrap", "grad_x_act": {"lo": 0.4, "hi": 0.8},
                         "lrp_half": None},
        },
        "metric": "logit_diff",
        "metric_full": 2.5,
        "n_test_prompts": 16,
        "target_faithfulness": 0.8,
        "n_cells": 1000,
        "grid": {"layers": 4, "positions": 4, "neurons": 64},
    }  # fmt: skip


def acdc_trace(kept: tuple[str, ...]) -> EdgeTrace:
    """Every edge checked once from a zero baseline: removed ones at Δ = 0, kept ones at
    Δ = 0.5 except the second, kept at Δ a hair above τ = 0.1 (a near-τ decision)."""
    faith = tuple(0.0 if e not in kept else (0.1000001 if e == kept[1] else 0.5) for e in EDGES)
    removed = tuple(e not in kept for e in EDGES)
    near = tuple(f == 0.1000001 for f in faith)
    return EdgeTrace(tuple(range(len(EDGES))), (0.0,) * len(EDGES), faith, removed, near)


def edge_circuit(method: str, task: str) -> CircuitArtifact:
    kept = EDGES[:5] if method == "acdc" else EDGES[2:6]
    traced = (1, acdc_trace(kept)) if method == "acdc" else (None, None)
    return CircuitArtifact(
        method=method, model="toy", task=task, edges=EDGES,
        scores=tuple(math.inf if e in kept else 0.01 * i for i, e in enumerate(EDGES)),
        score_kind="prune_tau" if method == "acdc" else "abs_attribution",
        circuits=(EdgeCircuit("tau=0.1" if method == "acdc" else "top=4", kept,
                              0.1 if method == "acdc" else None, 0.9, *traced),),
        n_forward=37, n_backward=0 if method == "acdc" else 1, seconds=1.25,
        n_prompts=8,
    )  # fmt: skip


def acdc_evaluation() -> dict[str, Any]:
    def res(n: int, rec: float) -> dict[str, Any]:
        ref = {
            "label": "x", "n_edges": n, "fraction": n / len(EDGES), "kl": 0.0123,
            "recovery": rec, "tau": None,
            "random": {"recovery_mean": 0.2222, "recovery_ci": 0.05, "kl_mean": 0.3, "kl_ci": 0.1},
        }  # fmt: skip
        return {"circuits": {"00": ref}, "reference": ref, "n_forward": 3, "seconds": 0.1}

    return {
        "reference_tau": 0.01,
        "methods": {"acdc": res(5, 0.8771), "eap": res(4, 0.6543)},
        "agreement": {
            "jaccard": {"acdc_vs_eap": 0.4286},
            "jaccard_over_taus": {},
            "roc_auc": {"eap": 0.9375},
            "reference_method": "acdc",
        },
        "n_edges": len(EDGES),
        "n_prompts": 8,
        "n_prompts_available": 12,
        "ablation": "resample",
        "ld_clean": 3.0,
        "ld_ablated": 0.5,
        "kl_ablated": 1.2,
        "mib": mib_curves(),
    }


def mib_curves() -> dict[str, Any]:
    keys = [f"{i:02d}" for i in range(10)]
    pct = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]

    def curve(cpr: float, cmd: float, faith: float) -> dict[str, Any]:
        values = dict.fromkeys(keys, faith)
        kept = dict.fromkeys(keys, 3)
        return {"cpr": cpr, "cmd": cmd, "faithfulness_signed": values,
                "faithfulness_abs": values, "n_kept_signed": kept, "n_kept_abs": kept}  # fmt: skip

    return {
        "sizes": {k: {"percent": p, "n_requested": 1} for k, p in zip(keys, pct, strict=True)},
        "methods": {"acdc": curve(0.6012, 0.3456, 0.6), "eap": curve(0.8123, 0.1789, 0.8)},
        "random": {
            "cpr_mean": 0.2633,
            "cpr_ci": 0.041,
            "cmd_mean": 0.7366,
            "cmd_ci": 0.041,
            "faithfulness_mean": dict.fromkeys(keys, 0.1),
            "faithfulness_ci": dict.fromkeys(keys, 0.02),
        },
    }


def compare_report() -> dict[str, Any]:
    pts = {
        "caa": [(-1.0, -0.4), (0.0, 0.0), (1.0, 0.6)],
        "lrp_neurons": [(0.0, -0.5), (1.0, 0.0), (2.0, 0.7777)],
    }
    return {
        "format": "circuitlab.compare/2",
        "model": "toy",
        "behaviour": "refusal",
        "circuits": {"lrp": "data/circuits/toy/refusal/lrp.json"},
        "vectors": "data/caa/toy/refusal.safetensors",
        "params": CompareConfig().model_dump(mode="json"),
        "bootstrap": {"resamples": 1000, "confidence": 0.95},
        "n_test_prompts": 12,
        "n_neutral_prompts": 8,
        "circuit_sizes": {"lrp": 30},
        "caa": {"layer": 2, "layer_chosen": True, "vector_norm": 4.5, "layer_effects": {}},
        "overlap": {
            "lrp": {
                "resid": {
                    "total_overlap": 7,
                    "total_checked": 40,
                    "total_overlap_null_mean": 1.5,
                    "total_overlap_p": 0.0099,
                    "mean_variance_explained": 0.31,
                    "mean_variance_explained_null_mean": 0.05,
                    "mean_variance_explained_p": 0.02,
                    "top_overlap": 6,
                    "top_overlap_of": 30,
                    "top_overlap_null_mean": 1.0,
                    "top_overlap_p": 0.0099,
                    "layers": {},
                }
            }
        },
        "decomposition": {},
        "sweep": {
            m: {
                f"{x:g}": {
                    "multiplier": x,
                    "effect": y,
                    "effect_lo": y - 0.1,
                    "effect_hi": y + 0.1,
                    "effect_positive": -y,
                    "effect_positive_lo": -y - 0.1,
                    "effect_positive_hi": -y + 0.1,
                    "effect_negative": y,
                    "effect_negative_lo": y - 0.1,
                    "effect_negative_hi": y + 0.1,
                    "kl": abs(y) / 10,
                    "kl_lo": abs(y) / 20,
                    "kl_hi": abs(y) / 5,
                    "logit_diff": y,
                }
                for x, y in p
            }
            for m, p in pts.items()
        },
        "neutral_multiplier": {"caa": 0.0, "lrp_neurons": 1.0},
        "matched": {
            "increase": {
                "measured_on": "effect_negative",
                "effect": 0.6,
                "best": "lrp_neurons",
                "methods": {
                    "caa": {"max_effect": 0.6, "kl": 0.06, "effect_per_kl": 10.0},
                    "lrp_neurons": {"max_effect": 0.7777, "kl": 0.0432, "effect_per_kl": 13.89},
                },
            },
            "decrease": {
                "measured_on": "effect_positive",
                "effect": None,
                "best": None,
                "methods": {},
            },
        },
    }


def write_artifacts(root: Path) -> dict[str, Any]:
    """Synthetic artifacts of one toy model (2 tasks, 1 behaviour) and its manifest."""
    d = root / "data"
    m: dict[str, Any] = {}
    write_json(d / "metrics/train.json", {"final_loss": 0.4321, "n_parameters": 123456,
               "train_seconds": 61.5, "vocab_size": 321, "corpus_sentences": 9000})  # fmt: skip
    write_json(d / "plots/train.json", [{"step": s, "loss": 5.0 / s} for s in range(1, 40)])
    m["training"] = {"metrics": str(d / "metrics/train.json"), "curve": str(d / "plots/train.json")}
    m["evaluation"] = {}
    for task, acc in (("capitals", 0.9375), ("ioi", 0.96875), ("refusal", 1.0)):
        p = d / f"metrics/evaluate/{task}.json"
        write_json(p, {"test": {"accuracy": acc, "logit_diff": 4.2, "n": 32,
                                "pairwise_accuracy": 1.0},
                       "train": {"accuracy": 1.0, "logit_diff": 4.4, "n": 32,
                                 "pairwise_accuracy": 1.0}})  # fmt: skip
        m["evaluation"][task] = str(p)
    Blacklist(neurons={(1, 17): 29, (3, 5): 25}, n_prompts=30, top_k=10, threshold_fraction=0.8,
              stability=0.5, known=[], n_layers=4, d_mlp=64).save(d / "blacklist.json")  # fmt: skip
    m["blacklist"] = str(d / "blacklist.json")
    m["lrp"] = {}
    for task in ("capitals", "ioi", "refusal"):
        base = d / "lrp" / task
        NeuronCircuit(neurons={(0, -1, 3): 0.5, (2, -2, 9): -0.25, (3, -1, 11): 0.125},
                      model="toy", task=task, method="lrp", n_prompts=32, n_layers=4,
                      d_mlp=64, metric_value=3.1).save(base / "circuit.json")  # fmt: skip
        write_json(base / "metrics.json", {"share_of_all_neurons": 0.0117, "blacklisted": 2,
                   "share_of_total_attribution": 0.42, "attribution_seconds": 0.5,
                   "n_neurons": 3, "n_prompts": 32, "n_positions": 4, "metric_mean": 3.1,
                   "attribution_sum": 2.9, "neurons_per_layer": {"0": 1, "2": 1, "3": 1}})  # fmt: skip
        write_json(base / "faithfulness.json", faithfulness_report())
        for name in ("neurons.png", "faithfulness.png"):
            (base / name).write_bytes(tiny_png(1))
        m["lrp"][task] = {k: str(base / f) for k, f in (("circuit", "circuit.json"),
            ("metrics", "metrics.json"), ("faithfulness", "faithfulness.json"),
            ("neurons_plot", "neurons.png"), ("faithfulness_plot", "faithfulness.png"))}  # fmt: skip
    m["acdc"] = {}
    for task in ("capitals", "ioi"):
        base = d / "acdc" / task
        entry: dict[str, Any] = {"circuits": {}, "dots": {}}
        for method in METHODS:
            art = edge_circuit(method, task)
            save_circuit(base / f"{method}.json", art)
            write_text_atomic(base / f"{method}.dot", to_dot(art, art.circuits[0]))
            entry["circuits"][method] = str(base / f"{method}.json")
            entry["dots"][method] = str(base / f"{method}.dot")
        write_json(base / "evaluate.json", acdc_evaluation())
        (base / "evaluate.png").write_bytes(tiny_png(2))
        entry |= {"evaluation": str(base / "evaluate.json"), "plot": str(base / "evaluate.png")}
        m["acdc"][task] = entry
    NeuronCircuit(neurons={(1, -1, 4): 0.0456}, model="toy", task="refusal", method="contrastive",
                  n_prompts=24, n_layers=4, d_mlp=64).save(d / "contrastive.json")  # fmt: skip
    m["contrastive"] = {"refusal": str(d / "contrastive.json")}
    write_json(d / "compare/refusal.json", compare_report())
    (d / "compare/pareto.png").write_bytes(tiny_png(3))
    m["compare"] = {"refusal": {"result": str(d / "compare/refusal.json"),
                                "plots": [str(d / "compare/pareto.png")]}}  # fmt: skip
    cell = {"mean": -0.4321, "lo": -0.61, "hi": -0.25, "n": 24}
    steering = {
        "format": "circuitlab.steering/2", "name": "capitals", "kind": "task", "method": "lrp",
        "model": "toy", "steering": "neurons", "positions": "all", "n_test": 24, "n_neurons": 3,
        "neurons_per_layer": {"0": 1, "1": 2}, "metric_names": ["logit_diff"],
        "unsteered_multiplier": 1.0, "bootstrap": {"resamples": 1000, "confidence": 0.95},
        "leakage": {}, "multipliers": [0.0, 1.0, 2.0], "random_seeds": 5, "metrics": {},
        "samples": {},
        "budget": {"max_kl": 0.5, "max_accuracy_drop": 0.05, "multipliers": {
            "m=0": {"kl_neutral": 0.0876, "accuracy_drop": 0.0, "in_budget": True},
            "m=1": {"kl_neutral": 0.0, "accuracy_drop": 0.0, "in_budget": True},
            "m=2": {"kl_neutral": 3.25, "accuracy_drop": 0.5, "in_budget": False}}},
        "summary": {
            "primary": "logit_diff", "unsteered": 2.5,
            "suppress": {"multiplier": 0.0, "steered_effect": cell, "delta": cell,
                         "control_effect": {"mean": -0.0123, "lo": -0.05, "hi": 0.02, "n": 24},
                         "beats_control": True, "kl_neutral": 0.0876, "kl_neutral_control": 0.01,
                         "in_budget": True, "candidates": 1, "confidence": 0.95,
                         "accuracy_drop": 0.0},
            "amplify": {"multiplier": 2.0, "steered_effect": cell, "delta": cell,
                        "control_effect": cell, "beats_control": False, "kl_neutral": 3.25,
                        "kl_neutral_control": 0.01, "in_budget": False, "candidates": 0,
                        "confidence": 0.95, "accuracy_drop": 0.5},
        },
    }  # fmt: skip
    write_json(d / "steering/capitals/lrp.json", steering)
    (d / "steering/capitals/lrp.png").write_bytes(tiny_png(4))
    m["steering"] = {
        "capitals": {
            "results": {"lrp": str(d / "steering/capitals/lrp.json")},
            "plots": [str(d / "steering/capitals/lrp.png")],
        }
    }
    write_json(d / "steering/summary.json", {"n_reports": 1, "leakage": {}, "verdicts": {
        "capitals/lrp": {"primary": "logit_diff", "suppress_beats_control": True,
                         "suppress_delta": -0.4321, "suppress_in_budget": True,
                         "amplify_beats_control": False, "amplify_in_budget": False}},
        "counts": {"suppress": {"rows": 1, "beat": 1, "no_budget": 0},
                   "amplify": {"rows": 1, "beat": 0, "no_budget": 1}}})  # fmt: skip
    (d / "steering/leakage.png").write_bytes(tiny_png(5))
    m["steering_summary"] = {
        "metrics": str(d / "steering/summary.json"),
        "plot": str(d / "steering/leakage.png"),
    }
    spread = {"mean": 1.0, "sd": None, "min": 1.0, "max": 1.0}
    write_json(d / "robustness.json", {
        "model": "toy", "models": {"0": "toy", "1": "toy-seed1"}, "min_accuracy": 0.9,
        "n_verdicts": 2, "n_robust": 1, "verdicts": {
            "accuracy/capitals": {"values": {"0": True, "1": True}, "figures": {"0": 1.0, "1": 1.0},
                                  "majority": True, "agree": 2, "robust": True, "spread": spread},
            "steering/capitals/lrp/amplify": {
                "values": {"0": True, "1": False}, "figures": {"0": 0.5, "1": -0.25},
                "majority": True, "agree": 1, "robust": False,
                "spread": {"mean": 0.125, "sd": 0.53, "min": -0.25, "max": 0.5}}}})  # fmt: skip
    (d / "robustness.png").write_bytes(tiny_png(6))
    m["robustness"] = {"metrics": str(d / "robustness.json"), "plot": str(d / "robustness.png")}
    benchmarks = []
    for rule, job, s in (("train_toy_model", "toy", 97.25), ("acdc_circuit", "toy/ioi/acdc", 12.5),
                         ("acdc_circuit", "toy/capitals/acdc", 7.5)):  # fmt: skip
        p = d / "benchmarks" / rule / f"{job}.tsv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load"
                     f"\tcpu_time\n{s}\t0:01:37\t812.5\t900\t800\t805\t0\t1\t99\t{s * 1.5}\n")  # fmt: skip
        benchmarks.append({"rule": rule, "job": job, "path": str(p)})
    return {"title": "test report", "models": {"toy": m}, "benchmarks": benchmarks}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_artifacts(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def html(artifacts: dict[str, Any]) -> str:
    return render_report(load_report_inputs(parse_manifest(artifacts)))


def test_report_is_self_contained(html: str) -> None:
    # 3 LRP tasks × 2 figures, 2 ACDC tasks × (evaluation + the reference method's graph), loss
    # curve, compare figure + its dose-response, steering figure and leakage matrix
    assert assert_self_contained(html) >= 6 + 4 + 1 + 2 + 2


def test_the_first_screen_answers_the_headline_questions(html: str) -> None:
    """Before any section: which circuits beat their controls, and CAA vs circuit at a
    matched effect, read from the steering and compare reports."""
    headline = html.split('<section class="headline"', 1)[1].split("</section>", 1)[0]
    assert html.index('<section class="headline"') < html.index("At a glance")
    assert "Which circuits beat their controls?" in headline
    assert "1 of 1 steered circuits" in headline and "within the side-effect budget" in headline
    assert (
        "1 of 2 (row, direction) verdicts beat their control, and 1 had no multiplier" in headline
    )
    assert "−0.432 [−0.61, −0.25] at ×0" in headline or "-0.432 [-0.61, -0.25] at ×0" in headline
    # the amplify arm's only multiplier is outside the budget: said, never counted, and why
    assert "no multiplier within budget (mildest ×2: KL 3.25)" in headline
    assert "<td>×2 (KL 3.25, another task −50.0 %)</td>" in html
    assert "CAA vs circuit at a matched effect" in headline
    assert "lrp_neurons: 0.0432" in headline and "<b>lrp_neurons</b>" in headline


@pytest.mark.skipif(
    __import__("circuitlab.report.screenshot", fromlist=["x"]).find_browser() is None,
    reason="no Chromium here (apt-get install chromium)",
)
def test_the_headline_is_on_the_first_screen_in_chromium(html: str, tmp_path: Path) -> None:
    """As a reader's browser lays the page out (1280 × 800 window): both headline tables
    start on the first screen, before any scrolling."""
    from circuitlab.report.screenshot import first_screen_layout

    page = tmp_path / "index.html"
    page.write_text(html, encoding="utf-8")
    tables = ["section.headline div:nth-child(1) table", "section.headline div:nth-child(2) table"]
    layout = first_screen_layout(page, tables, width=1280, height=800)
    for selector in tables:
        box = layout["found"][selector]
        assert box is not None, selector
        assert 0 <= box["top"] < layout["viewport"], (selector, box, layout["viewport"])


def test_report_shows_each_sections_key_numbers(html: str) -> None:
    for text in (
        "test report",
        # training and accuracy
        "0.432",
        "123,456",
        "61.5",
        "93.8 %",
        "96.9 %",
        # blacklist: two neurons, layer 1 neuron 17 in 29 of 30 prompts
        "blacklisted neurons",
        "96.7 %",
        "0.5",
        # LRP: circuit size, areas circuit vs random, smallest size reaching target, calibration
        "0.812",
        "0.314",
        "10.0 %",
        "0.734",
        "2 of 2",
        # ACDC: reference recovery vs random, Jaccard, ROC AUC, edges kept
        "0.877",
        "0.222 ± 0.05",
        "0.429",
        "0.938",
        "62.5 %",
        # ACDC's near-τ decision of the traced circuit: its edge, Δ − τ and decision
        "near-τ check",
        f"<code>{EDGES[1].replace('>', '&gt;')}</code></td><td>0.1</td><td>+1.0e-07</td><td>kept",
        # contrastive
        "0.0456",
        # CAA vs circuit: overlap 7 of 40 with its null, matched effect per KL
        "7 / 40",
        # steering: the suppression verdict against its control, with intervals
        "-0.432 [-0.61, -0.25]",
        "-0.0123 [-0.05, 0.02]",
        "0.0876",
        "capitals/lrp",
        "Δ -0.432 (lrp, beats control)",
        "13.9",
        "lrp_neurons",
        # timing: train_toy_model first, 97.2 s; acdc_circuit 2 jobs, 20 s in all
        "97.2",
        "toy/ioi/acdc",
        "812",
    ):
        assert text in html, text
    timing = html.split('id="timing"', 1)[1]
    assert timing.index("train_toy_model") < timing.index("acdc_circuit")
    for task in ("capitals", "ioi", "refusal"):
        assert f"<h4>{task}</h4>" in html


def test_acdc_graph_is_drawn_without_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    import circuitlab.report.circuits_view as mod
    import circuitlab.report.inline as inline

    monkeypatch.setattr(inline.shutil, "which", lambda name: None)
    art = edge_circuit("acdc", "ioi")
    uri = mod.acdc_graph(art, art.circuits[0], "digraph {}")
    assert uri is not None and uri.startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # every node of the circuit is drawn, as text (not a bitmap)
    kept = art.circuits[0].kept
    nodes = {n for e in kept for n in e.split("->")}
    assert all(f">{n}<" in svg or n in svg for n in nodes), nodes
    assert mod.acdc_graph(art, art.circuits[0], "digraph {}") == uri  # same bytes each time
    assert circuit_graph_svg([], 1, "empty") is None


def test_inlined_pngs_are_drawn_for_a_screen() -> None:
    """A wide figure is inlined at screen width in a palette: a fraction of its bytes."""
    import io

    from PIL import Image

    from circuitlab.report.inline import SCREEN_WIDTH, compact_png, data_uri
    from circuitlab.report.plots import subplots

    fig, ax = subplots(figsize=(16, 5))
    ax.plot(range(100), [i**0.5 for i in range(100)])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    png = buf.getvalue()
    small = compact_png(png)
    image = Image.open(io.BytesIO(small))
    assert image.width == SCREEN_WIDTH and image.mode == "P"
    assert len(small) < len(png) / 2
    assert data_uri(png) == "data:image/png;base64," + base64.b64encode(small).decode()


def test_every_listed_input_is_read_and_a_missing_one_names_its_rule(
    artifacts: dict[str, Any], tmp_path: Path
) -> None:
    manifest = parse_manifest(artifacts)
    paths = manifest_paths(manifest)
    assert len(paths) == len(set(paths)) > 30
    rules = {  # relative path pattern -> the rule that makes it
        r"(metrics|plots)/train\.json": "train_toy_model", r"metrics/evaluate/": "evaluate_model",
        r"blacklist\.json": "blacklist", r"lrp/\w+/(circuit|metrics)\.json": "lrp_circuit",
        r"lrp/\w+/neurons\.png": "lrp_circuit", r"lrp/\w+/faithfulness": "lrp_faithfulness",
        r"acdc/\w+/(acdc|eap)\.json": "acdc_circuit", r"acdc/\w+/(acdc|eap)\.dot": "acdc_evaluate",
        r"acdc/\w+/evaluate": "acdc_evaluate",
        r"contrastive": "contrastive_circuit", r"compare/": "compare",
        r"steering/capitals": "steering", r"steering/(summary|leakage)": "steering_summary",
        r"benchmarks/train_toy_model": "train_toy_model", r"benchmarks/acdc": "acdc_circuit",
        r"robustness\.(json|png)": "robustness",
    }  # fmt: skip
    out = tmp_path / "index.html"
    for path in paths:
        p = Path(path)
        saved = p.read_bytes()
        p.unlink()
        try:
            with pytest.raises(ArtifactError) as err:
                write_report(manifest, out)
        finally:
            p.write_bytes(saved)
        rel = path.split("/data/", 1)[1]
        (rule,) = [r for k, r in rules.items() if re.fullmatch(f"{k}.*", rel)]
        assert path in str(err.value) and f"rule '{rule}'" in str(err.value), (path, err.value)
        assert not out.exists()


def test_malformed_inputs_are_clear_errors(artifacts: dict[str, Any], tmp_path: Path) -> None:
    png = Path(artifacts["models"]["toy"]["acdc"]["ioi"]["plot"])
    saved = png.read_bytes()
    png.write_text("not an image")
    try:
        with pytest.raises(ArtifactError, match="not a PNG"):
            write_report(parse_manifest(artifacts), tmp_path / "index.html")
    finally:
        png.write_bytes(saved)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_manifest({**artifacts, "modles": {}})
    assert not (tmp_path / "index.html").exists()


def test_cli_writes_the_report_and_fails_cleanly(artifacts: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "report" / "index.html"
    assert run("report", "--out", out, "--manifest", json.dumps(artifacts)).returncode == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    out.unlink()
    missing = json.loads(json.dumps(artifacts))
    missing["models"]["toy"]["blacklist"] = str(tmp_path / "nope.json")
    ran = run("report", "--out", out, "--manifest", json.dumps(missing))
    assert ran.returncode == 2 and "rule 'blacklist'" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr and not out.exists()
    ran = run("report", "--out", out, "--manifest", "[1]")
    assert ran.returncode == 2 and "must be a JSON object" in ran.stderr and not out.exists()


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (3, "3"), (123456, "123,456"), (0.81234, "0.812"), (1e-5, "1.00e-05"),
     (math.inf, "∞"), (math.nan, "—"), (True, "yes"), (0.0, "0"), (97.25, "97.2")],
)  # fmt: skip
def test_fmt(value: Any, text: str) -> None:
    assert fmt(value) == text


def test_the_seed_robustness_section(html: str) -> None:
    """With `make robustness`: the first screen says how many verdicts hold on every seed, and
    the section lists each verdict per seed, the ones that differ first."""
    headline = html.split('<section class="headline"', 1)[1].split("</section>", 1)[0]
    assert "1 of 2 verdicts agree on every training seed (0 (toy), 1 (toy-seed1))" in headline
    section = html.split('id="toy-robustness"', 1)[1]
    assert section.index("steering/capitals/lrp/amplify") < section.index("accuracy/capitals")
    assert (
        '<td class="no">1 / 2</td>' in section
        and "0.125 (sd 0.53; −0.25 … 0.5)" in section.replace("-0.25", "−0.25")
    )


def test_edge_methods_are_ranked_by_cpr_against_random(html: str) -> None:
    """MIB's yardstick in the report: the at-a-glance best method, and the ranking table with
    the random baseline and "beats random" per area."""
    assert "eap 0.812 vs 0.263" in html  # best CPR first, against random edges
    table = html[html.index("method (best CPR first)") :]
    assert table.index("<td>eap</td>") < table.index("<td>acdc</td>")
    assert "random edges (mean ± 95 %)</td><td>0.263 ± 0.04" in table
    assert '<td>0.812</td><td class="yes">yes</td><td>0.179</td><td class="yes">yes</td>' in table
