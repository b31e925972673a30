"""What running a circuit through TransformerLens hooks costs, against circuitlab's own patch
layer, on the embedded toy model (`--only tl`; needs `make reproduce` first).

Same process, same weights, same 16 ioi prompts, resample ablation: (a) circuitlab's patched
forward of one random edge mask from scratch (`forward`, no resume), (b) the same edge set run
on a `TransformerBridge` with `circuitlab.interop.tl.patching_hooks` (what a TL user does with
an export), (c) one exact ACDC check as fast ACDC makes it (a sweep's wall time over its
checks). A TL-only ACDC with no caching pays (b) per check: the table extrapolates one τ
(823 checks) from it. Checks: (a) and (b) give the same logits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitlab.acdc import FastConfig, SweepConfig, fast_acdc, patchable, prepare_rows
from circuitlab.acdc.patch import forward
from circuitlab.interop.tl import export_kept, patching_hooks
from circuitlab.models import load_model
from circuitlab.tasks.io import load_rows

Result = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
TOY_MODEL = ROOT / "data" / "models" / "toy"
TOY_DATA = ROOT / "data" / "datasets" / "toy" / "ioi.jsonl"


@dataclass(frozen=True)
class Settings:
    n_prompts: int = 16
    repeats: int = 10

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Settings:
        return cls(n_prompts=4, repeats=repeats or 2) if quick else cls(repeats=repeats or 10)


def _median(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out = fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return out, statistics.median(runs)


def run(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    if not (TOY_MODEL / "config.json").exists() or not TOY_DATA.exists():
        return [{"case": "toy ioi via TransformerLens", "skipped": "run `make reproduce` first"}]
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import AutoModelForCausalLM

    log(" case 'toy ioi via TransformerLens': circuitlab's patch layer vs TL hooks")
    lm = load_model(TOY_MODEL, tokenizer=True)
    rows = load_rows(TOY_DATA, split="train")[: settings.n_prompts]
    pm = patchable(lm)
    ctx = prepare_rows(pm, rows, "resample")
    graph = ctx.graph
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(graph.n_edges, generator=g) < 0.5).float()
    export = export_kept(graph.edges, [e for e, m in zip(graph.edges, mask, strict=True) if not m])
    hf = AutoModelForCausalLM.from_pretrained(TOY_MODEL, attn_implementation="eager").eval()
    bridge = build_bridge_from_module(hf, type(hf).__name__, hf_config=hf.config, model_name="toy")
    for setting, on in export["tl_settings"].items():
        getattr(bridge, setting)(on)
    ids, am, last = ctx.batch.input_ids, ctx.batch.attention_mask, ctx.batch.last
    rows_idx = torch.arange(len(rows))
    with torch.no_grad():
        _, plain_s = _median(
            lambda: lm.model(input_ids=ids, attention_mask=am).logits, settings.repeats
        )
        ours, ours_s = _median(lambda: forward(ctx, mask), settings.repeats)
        _, corrupt = bridge.run_with_cache(ctx.batch.corrupt_ids, attention_mask=am)
        hooks = patching_hooks(export, corrupt)
        tl, tl_s = _median(
            lambda: bridge.run_with_hooks(ids, attention_mask=am, fwd_hooks=hooks)[rows_idx, last],
            settings.repeats,
        )
    sweep = fast_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-2,)), FastConfig())
    check_s = sweep.seconds / max(sweep.n_forward, 1)
    gap = float((tl - ours).abs().max())
    n = graph.n_edges
    return [{
        "case": "toy ioi via TransformerLens",
        "setup": {"about": f"{len(rows)} prompts × {ids.shape[1]} tokens, {n} edges, half patched"},
        "timings": [
            {"name": "plain HF forward", "median_s": plain_s, "runs_s": [plain_s]},
            {"name": "(a) circuitlab patched forward, from scratch", "median_s": ours_s, "runs_s": [ours_s]},
            {"name": "(b) TransformerBridge + patching_hooks", "median_s": tl_s, "runs_s": [tl_s]},
            {"name": "(c) one exact ACDC check (fast ACDC, τ = 1e-2)", "median_s": check_s, "runs_s": [check_s]},
        ],
        "ratios": [
            {"name": "(b) / (a): TL hooks against circuitlab's patched forward", "value": tl_s / ours_s, "unit": "×", "goal": None, "met": None},
            {"name": "(b) / (c): a TL check against a fast ACDC check", "value": tl_s / check_s, "unit": "×", "goal": None, "met": None},
            {"name": f"one τ ({n} checks) through TL hooks, extrapolated", "value": n * tl_s, "unit": "s", "goal": None, "met": None},
            {"name": "one τ with fast ACDC, measured", "value": sweep.seconds, "unit": "s", "goal": None, "met": None},
        ],
        "checks": [{"name": "(a) and (b) give the same answer logits", "passed": gap < 1e-3,
                    "detail": f"max |Δ| {gap:.2e}", "tolerance": "1e-3"}],
    }]  # fmt: skip


def run_backend(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    """The transformer_lens backend against the native one (`--only backend`): the same toy
    model loaded both ways, the same prompts; one exact ACDC τ (fast ACDC, its default
    settings) and one EAP pass (forward + backward over every edge mask) on each. Checks: the
    same kept edges and the same EAP scores."""
    if not (TOY_MODEL / "config.json").exists() or not TOY_DATA.exists():
        return [{"case": "toy ioi, backend", "skipped": "run `make reproduce` first"}]
    from circuitlab.acdc.eap import eap_scores
    from circuitlab.models.spec import ModelSpec

    log(" case 'toy ioi, backend': native patch layer vs TransformerLens bridge hooks")
    rows = load_rows(TOY_DATA, split="train")[: settings.n_prompts]
    cfg = SweepConfig(tao_bases=(1,), tao_exps=(-2,))
    timings, results = [], {}
    repeats = max(1, settings.repeats // 5)
    for backend in ("native", "transformer_lens"):
        lm = load_model(ModelSpec(id=str(TOY_MODEL), backend=backend), tokenizer=True)
        ctx = prepare_rows(patchable(lm), rows, "resample")
        sweep, acdc_s = _median(lambda ctx=ctx: fast_acdc(ctx, cfg, FastConfig()), repeats)
        scores, eap_s = _median(lambda ctx=ctx: eap_scores(ctx), settings.repeats)
        results[backend] = (sweep.per_tau[0].kept, scores)
        timings += [
            {"name": f"{backend}: one exact ACDC τ = 1e-2", "median_s": acdc_s, "runs_s": [acdc_s]},
            {"name": f"{backend}: one EAP pass", "median_s": eap_s, "runs_s": [eap_s]},
        ]
        log(f"  {backend}: ACDC τ {acdc_s:.2f} s ({sweep.n_forward} passes), EAP {eap_s:.3f} s")
    (kept_n, eap_n), (kept_t, eap_t) = results["native"], results["transformer_lens"]
    gap = float((eap_n - eap_t).abs().max())
    by = {t["name"]: t["median_s"] for t in timings}
    n_edges = len(patchable(load_model(TOY_MODEL)).graph.edges)
    return [{
        "case": "toy ioi, backend",
        "setup": {"about": f"{len(rows)} ioi prompts, {n_edges} edges, resample ablation"},
        "timings": timings,
        "ratios": [
            {"name": "ACDC τ: transformer_lens / native", "unit": "×", "goal": None, "met": None,
             "value": by["transformer_lens: one exact ACDC τ = 1e-2"] / by["native: one exact ACDC τ = 1e-2"]},
            {"name": "EAP pass: transformer_lens / native", "unit": "×", "goal": None, "met": None,
             "value": by["transformer_lens: one EAP pass"] / by["native: one EAP pass"]},
        ],
        "checks": [
            {"name": "the same kept edges at τ = 1e-2", "passed": kept_n == kept_t,
             "detail": f"{len(kept_n)} vs {len(kept_t)} edges", "tolerance": "identical"},
            {"name": "the same EAP scores", "passed": gap < 1e-3,
             "detail": f"max |Δ| {gap:.2e}", "tolerance": "1e-3"},
        ],
    }]  # fmt: skip
