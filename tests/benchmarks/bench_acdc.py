"""ACDC benchmark (issue 4 §4): cost of every edge-circuit method in forward-equivalents.

Shape B1: a random Llama (4 layers, d_model 128, 8 heads, d_mlp 512, vocab 512), 32 prompts of
16 tokens whose corrupt versions differ in 2 random positions, batch 32, τ = 1e-2, resample
ablation, KL faithfulness. Each method runs once; its wall time is divided by the median wall
time of one plain forward of the HF model on the same batch, measured in the same process
("forward-equivalents"). Reported:

* (b) sequential ACDC, (c) exact fast ACDC — and the check that (c) made the same decisions;
* (d1) independent windows, (d2) group testing, (d3) gradient-guided group testing —
  decision agreement with (b);
* (e) EAP (one clean + one corrupt forward, one backward);
* scaling: the same at 2, 4 and 6 layers (edges grow roughly quadratically with depth);
* the embedded toy model (when `data/models/toy` exists) on ioi with auto-circuit's 20-value
  τ sweep, fast ACDC and group testing only;
* the planted ground truth (`circuitlab.acdc.planted`): every method's ROC AUC of its edge
  scores against the known circuit, with zero and resample ablation and auto-circuit's 20 τ
  (also exact ACDC with the pipeline's default 9-τ sweep, and the same model at HF's default
  weight scale, where the planted edges' effects fall below every τ).

Goals (issue 4): (c) ≤ 100 forward-equivalents with decisions identical to (b); d2 ≥ 3× cheaper
than (c) with ≥ 98 % agreement; (e) ≤ 10 forward-equivalents; planted AUC ≥ 0.95. Reported, never asserted; only a
failed equivalence (c) ≢ (b) is an error.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_lrp import save_word_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from circuitlab.acdc import (
    ApproxConfig,
    EAPConfig,
    FastConfig,
    PatchContext,
    SweepConfig,
    approx_acdc,
    decision_agreement,
    edge_attribution,
    fast_acdc,
    patchable,
    prepare_rows,
    sequential_acdc,
)
from circuitlab.acdc.planted import (
    PlantedSpec,
    build_planted,
    planted_aucs,
    planted_edges,
    planted_rows,
)
from circuitlab.acdc.registry import edge_methods
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.models import LoadedModel, load_model
from circuitlab.tasks.io import load_rows
from circuitlab.types import TaskRow

ROOT = Path(__file__).resolve().parents[2]
TOY_MODEL = ROOT / "data" / "models" / "toy"
TOY_DATA = ROOT / "data" / "datasets" / "toy" / "ioi.jsonl"
GOAL_FAST = 100.0
GOAL_D2_SPEEDUP = 3.0
GOAL_D2_AGREEMENT = 0.98
GOAL_EAP = 10.0
GOAL_AUC = 0.95
#: auto-circuit's sweep (τ from 1e-5) and the pipeline's default (9 τ from 1e-4)
SWEEP_20 = {"tao_bases": [1.0, 3.0, 5.0, 7.0, 9.0], "tao_exps": [-5, -4, -3, -2]}
SWEEP_PIPELINE = {"tao_bases": [1.0, 2.0, 5.0], "tao_exps": [-4, -3, -2]}

Result = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """`quick` shrinks everything for a smoke run."""

    n_prompts: int = 32
    seq_len: int = 16
    layers: tuple[int, ...] = (4, 2, 6)
    repeats: int = 5
    toy: bool = True
    planted_prompts: int = 16

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Settings:
        if quick:
            return cls(
                n_prompts=4, seq_len=6, layers=(1,), repeats=repeats or 1, toy=False,
                planted_prompts=4,
            )  # fmt: skip
        return cls(repeats=repeats or 5)


def random_llama(path: Path, n_layers: int, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=n_layers,
        num_attention_heads=8, num_key_value_heads=8,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    save_word_tokenizer(path, 510)
    return load_model(path)


def b1_rows(n: int, length: int, seed: int = 0) -> list[TaskRow]:
    """Random word prompts; the corrupt prompt differs in 2 random positions (not the last)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        words = torch.randint(0, 500, (length,), generator=g).tolist()
        corrupt = list(words)
        for p in torch.randperm(length - 1, generator=g)[:2].tolist():
            corrupt[p] = (corrupt[p] + 1 + int(torch.randint(0, 498, (1,), generator=g))) % 500
        rows.append(
            TaskRow(
                id=f"b{i}", split="train",
                prompt=" ".join(f"w{w}" for w in words),
                corrupt_prompt=" ".join(f"w{w}" for w in corrupt),
                target=f" w{(words[-1] + 1) % 500}", counterfactual=f" w{(words[-1] + 2) % 500}",
            )
        )  # fmt: skip
    return rows


def plain_forward_s(lm: LoadedModel, ctx: PatchContext, repeats: int) -> float:
    ids, mask = ctx.batch.input_ids, ctx.batch.attention_mask
    with torch.no_grad():
        lm.model(input_ids=ids, attention_mask=mask)
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            lm.model(input_ids=ids, attention_mask=mask)
            runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _fe(name: str, seconds: float, fwd: float, goal: float | None = None) -> Result:
    value = seconds / fwd
    return {
        "name": name, "value": value, "unit": "fwd-eq",
        "goal": None if goal is None else f"<= {goal:g}", "met": None if goal is None else value <= goal,
    }  # fmt: skip


def run_case(
    case: str, lm: LoadedModel, rows: list[TaskRow], cfg: SweepConfig, settings: Settings,
    *, with_sequential: bool = True, with_window: bool = True,
) -> Result:  # fmt: skip
    pm = patchable(lm)
    ctx = prepare_rows(pm, rows, "resample")
    fwd = plain_forward_s(lm, ctx, settings.repeats)
    runs: dict[str, tuple[Any, float]] = {}
    if with_sequential:
        runs["(b) sequential ACDC"] = timed(lambda: sequential_acdc(ctx, cfg))
    runs["(c) exact fast ACDC"] = timed(lambda: fast_acdc(ctx, cfg, FastConfig()))
    if with_window:
        runs["(d1) independent windows"] = timed(
            lambda: approx_acdc(ctx, cfg, ApproxConfig("window", 16))
        )
    runs["(d2) group testing"] = timed(lambda: approx_acdc(ctx, cfg, ApproxConfig("group", 16)))
    runs["(d3) guided group testing"] = timed(
        lambda: approx_acdc(ctx, cfg, ApproxConfig("guided", 64, risk=0.5))
    )
    runs["(e) EAP"] = timed(lambda: edge_attribution(ctx, EAPConfig()))
    seq = runs.get("(b) sequential ACDC", (None, 0.0))[0]
    fast, fast_s = runs["(c) exact fast ACDC"]
    timings, ratios, checks = [], [], []
    timings.append({"name": "one plain HF forward", "median_s": fwd, "runs_s": [fwd]})
    for name, (res, seconds) in runs.items():
        n_fwd = getattr(res, "n_forward", None)
        timings.append(
            {"name": f"{name} ({n_fwd} passes)", "median_s": seconds, "runs_s": [seconds]}
        )
        goal = {"(c) exact fast ACDC": GOAL_FAST, "(e) EAP": GOAL_EAP}.get(name)
        ratios.append(_fe(f"{name}", seconds, fwd, goal))
    d2_s = runs["(d2) group testing"][1]
    speedup = fast_s / d2_s
    ratios.append({"name": "(c) / (d2) cost", "value": speedup, "unit": "×",
                   "goal": f">= {GOAL_D2_SPEEDUP:g}", "met": speedup >= GOAL_D2_SPEEDUP})  # fmt: skip
    reference = seq if seq is not None else fast
    for name in ("(d1) independent windows", "(d2) group testing", "(d3) guided group testing"):
        if name in runs:
            agree = decision_agreement(runs[name][0], reference)["overall"]
            goal = GOAL_D2_AGREEMENT if name.startswith(("(d2)", "(d3)")) else None
            ratios.append({
                "name": f"{name}: agreement with {'(b)' if seq is not None else '(c)'}",
                "value": 100 * agree, "unit": "%",
                "goal": None if goal is None else f">= {100 * goal:g}",
                "met": None if goal is None else agree >= goal,
            })  # fmt: skip
    if seq is not None:
        same = fast.scores == seq.scores and [r.kept for r in fast.per_tau] == [
            r.kept for r in seq.per_tau
        ]
        differing = sum(a != b for a, b in zip(fast.scores, seq.scores, strict=True))
        checks.append({
            "name": "(c) ≡ (b): prune scores and circuits",
            "passed": bool(same) or differing <= fast.stats.near_tau_decisions,
            "detail": f"{differing} differing scores, {fast.stats.near_tau_decisions} near-τ decisions",
            "tolerance": "identical (near-τ decisions counted)",
        })  # fmt: skip
    ids = ctx.batch.input_ids
    return {
        "case": case,
        "setup": {
            "about": f"{len(rows)} prompts × {ids.shape[1]} tokens, {pm.graph.n_edges} edges, "
            f"{len(cfg.taus)} τ, kept at τ={cfg.taus[0]:g}: {len(fast.per_tau[0].kept)}",
            "n_edges": pm.graph.n_edges,
            "n_taus": len(cfg.taus),
        },
        "timings": timings,
        "ratios": ratios,
        "checks": checks,
    }


def run(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    results = []
    b1 = SweepConfig(tao_bases=(1,), tao_exps=(-2,))
    with tempfile.TemporaryDirectory() as tmp:
        for n_layers in settings.layers:
            log(f" case 'B1-{n_layers}L': random Llama, {n_layers} layers")
            lm = random_llama(Path(tmp) / f"l{n_layers}", n_layers)
            rows = b1_rows(settings.n_prompts, settings.seq_len)
            results.append(run_case(f"B1-{n_layers}L", lm, rows, b1, settings))
        for ablation in ("zero", "resample"):
            log(f" case 'planted, {ablation}': every method against the known circuit")
            results.append(planted_case(Path(tmp) / f"planted-{ablation}", ablation, settings))
        log(" case 'planted, HF weight scale': exact ACDC and EAP at initializer range 0.02")
        results.append(
            planted_case(Path(tmp) / "planted-small", "zero", settings, PlantedSpec(init_std=0.02))
        )
    if settings.toy:
        if not (TOY_MODEL / "config.json").exists() or not TOY_DATA.exists():
            results.append({"case": "toy ioi", "skipped": "run `make reproduce` first"})
        else:
            log(" case 'toy ioi': the embedded model, 20 τ")
            lm = load_model(TOY_MODEL)
            rows = load_rows(TOY_DATA, split="train")[: settings.n_prompts]
            sweep = SweepConfig()  # auto-circuit's 20 values
            results.append(
                run_case(
                    "toy ioi, 20 τ",
                    lm,
                    rows,
                    sweep,
                    settings,
                    with_sequential=False,
                    with_window=False,
                )
            )
    return results


def _auc_row(name: str, auc: float) -> Result:
    return {"name": name, "value": auc, "unit": "AUC", "goal": f">= {GOAL_AUC:g}",
            "met": auc >= GOAL_AUC}  # fmt: skip


def planted_case(
    path: Path, ablation: str, settings: Settings, spec: PlantedSpec | None = None
) -> Result:
    """ROC AUC of every method's edge scores against the planted circuit (20 τ), and of exact
    ACDC with the pipeline's default sweep. At a non-default weight scale only ACDC and EAP."""
    spec = spec or PlantedSpec()
    lm = build_planted(path, spec)
    rows = planted_rows(lm, settings.planted_prompts, length=8)
    base = {"ablation": ablation, "n_prompts": settings.planted_prompts}
    methods = ("acdc", "eap") if spec != PlantedSpec() else tuple(edge_methods())
    report = planted_aucs(lm, spec, rows, AcdcConfig(**base, **SWEEP_20), methods)
    pipeline = planted_aucs(lm, spec, rows, AcdcConfig(**base, **SWEEP_PIPELINE), ("acdc",))
    n_edges, n_true = report["acdc"]["n_edges"], report["acdc"]["n_true"]
    timings, ratios = [], []
    for method, entry in report.items():
        timings.append({"name": f"{method} ({entry['n_forward']} passes)",
                        "median_s": entry["seconds"], "runs_s": [entry["seconds"]]})  # fmt: skip
        ratios.append(_auc_row(f"{method}: edge AUC (20 τ)", entry["auc"]))
        if "head_auc" in entry:
            ratios.append(_auc_row("head_pruning: head AUC", entry["head_auc"]))
        ratios.append({"name": f"{method}: planted edges in its circuit of {entry['n_kept']}",
                       "value": entry["kept_true"], "unit": "edges", "goal": None,
                       "met": None})  # fmt: skip
    ratios.append(_auc_row("acdc: edge AUC (9 τ from 1e-4)", pipeline["acdc"]["auc"]))
    planted = sorted(planted_edges(patchable(lm).graph, spec))
    return {
        "case": f"planted, {ablation}"
        + ("" if spec == PlantedSpec() else f", std {spec.init_std:g}"),
        "setup": {
            "about": f"{len(rows)} prompts × 8 tokens, {n_edges} edges, {n_true} planted, "
            f"std {spec.init_std:g}",
            "heads": [list(h) for h in spec.heads],
            "mlps": list(spec.mlps),
            "head_pruning_kept": report.get("head_pruning", {}).get("kept_heads"),
            "n_edges": n_edges,
            "n_true": n_true,
            "planted_edges": planted,
        },
        "timings": timings,
        "ratios": ratios,
        "checks": [],
        "aucs": {m: e["auc"] for m, e in report.items()},
        "aucs_pipeline_sweep": {"acdc": pipeline["acdc"]["auc"]},
    }


# ---------------------------------------------------------------- scaling (`--only acdc_scaling`)


def scaling_case(n_layers: int, lm: LoadedModel, rows: list[TaskRow], settings: Settings) -> Result:
    """The current methods at one depth of the B1 shape: exact ACDC at τ = 1e-2 and over a
    τ sweep (shared checks), plain and gradient-guided group testing, EAP. Costs in
    forward-equivalents of the same process's plain HF forward; agreement against exact."""
    pm = patchable(lm)
    ctx = prepare_rows(pm, rows, "resample")
    fwd = plain_forward_s(lm, ctx, settings.repeats)
    one = SweepConfig(tao_bases=(1,), tao_exps=(-2,))
    sweep = SweepConfig(tao_bases=(1,), tao_exps=(-5, -4, -3, -2, -1)) if settings.toy else one
    runs = {
        "(c) exact ACDC, τ = 1e-2": timed(lambda: fast_acdc(ctx, one, FastConfig())),
        "(d2) group testing, τ = 1e-2": timed(
            lambda: approx_acdc(ctx, one, ApproxConfig("group", 16))
        ),
        "(d3) guided group testing, τ = 1e-2": timed(
            lambda: approx_acdc(ctx, one, ApproxConfig("guided", 64, risk=0.5))
        ),
        "(e) EAP": timed(lambda: edge_attribution(ctx, EAPConfig())),
        f"(c) exact ACDC, {len(sweep.taus)}-τ sweep, shared": timed(
            lambda: fast_acdc(ctx, sweep, FastConfig())
        ),
    }
    exact = runs["(c) exact ACDC, τ = 1e-2"][0]
    shared = runs[f"(c) exact ACDC, {len(sweep.taus)}-τ sweep, shared"][0]
    timings = [{"name": "one plain HF forward", "median_s": fwd, "runs_s": [fwd]}]
    ratios = []
    for name, (res, seconds) in runs.items():
        timings.append({"name": f"{name} ({getattr(res, 'n_forward', None)} passes)",
                        "median_s": seconds, "runs_s": [seconds]})  # fmt: skip
        ratios.append(_fe(name, seconds, fwd))
    for name in ("(d2) group testing, τ = 1e-2", "(d3) guided group testing, τ = 1e-2"):
        agree = decision_agreement(runs[name][0], exact)["overall"]
        ratios.append({"name": f"{name}: agreement with (c)", "value": 100 * agree, "unit": "%",
                       "goal": None, "met": None})  # fmt: skip
    unshared = shared.stats.n_checks_unshared
    ratios.append({"name": f"shared sweep: checks {shared.n_forward} of {unshared} unshared",
                   "value": unshared / max(shared.n_forward, 1), "unit": "× fewer",
                   "goal": None, "met": None})  # fmt: skip
    return {
        "case": f"B1-{n_layers}L scaling",
        "setup": {
            "about": f"{len(rows)} prompts × {ctx.batch.input_ids.shape[1]} tokens, "
            f"{pm.graph.n_edges} edges, kept at τ=1e-2: {len(exact.per_tau[0].kept)}",
            "n_edges": pm.graph.n_edges,
            "n_taus": len(sweep.taus),
        },
        "timings": timings,
        "ratios": ratios,
        "checks": [],
    }


def run_scaling(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    """How each current method's cost grows with depth (edges ∝ layers²): B1 at 2, 4, 6 layers."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_layers in sorted(settings.layers):
            log(f" case 'B1-{n_layers}L scaling': random Llama, {n_layers} layers")
            lm = random_llama(Path(tmp) / f"l{n_layers}", n_layers)
            rows = b1_rows(settings.n_prompts, settings.seq_len)
            results.append(scaling_case(n_layers, lm, rows, settings))
    return results
