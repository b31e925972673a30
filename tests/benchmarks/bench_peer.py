"""Side by side with auto-circuit 1.0.1 on the same weights and token ids (`--only peer`).

The peer lives in its own virtualenv (it pins TransformerLens 2 and numpy < 2): build it once
with ``bash ../shared/peers/autocircuit/setup.sh`` (``$PEER_VENV``, default
``/tmp/venv-peer``; harness folder ``$PEER_DIR``, default ``../shared/peers/autocircuit``
beside this repository). Without it every case is skipped with that message.

Per case the harness (``peer_run.py``) builds a random Llama in TransformerLens, writes it as
an HF directory (``--export-hf``, no tokenizer), draws clean/corrupt token ids, answers and
wrong answers, and runs auto-circuit's ACDC (one call per τ, its edges sorted into the
canonical order: destination layer descending, head by head Q/K/V, latest source first)
recording every visit's faithfulness, and its mask-gradient EAP. circuitlab then loads that
directory (`load_model`, no tokenizer), builds the batch from the peer's token ids
(`batch_from_ids`) and runs exact fast ACDC in both of its edge orders and EAP. Reported:

* per τ, with ``edge_order="autocircuit"``: the visiting order (must be the peer's), the
  decisions that differ and whether the first difference is a near-τ decision (float
  rounding of a decision within ~1e-5 relative of τ; after it the two runs are in different
  states, so later differences follow from it), the largest faithfulness difference over the
  checks before any divergence;
* how many decisions the order alone changes (circuitlab's default order against the peer's);
* EAP: circuitlab's scores against the negated peer scores (the sign convention of
  `circuitlab.acdc.eap`);
* wall time of each tool's ACDC in forward-equivalents of its own process's plain HF forward
  of the batch (the two tools are separate processes, so raw seconds are not compared): one
  run per τ on each side, and circuitlab's shared sweep against auto-circuit's one run per τ
  (auto-circuit's default 20-τ grid on the 3-layer case; B1 at τ = 1e-2).

Correctness checks (non-zero exit on failure): the visiting order, decisions identical up to
a near-τ first divergence, EAP equal to −peer.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from circuitlab.acdc import (
    EAPConfig,
    FastConfig,
    SweepConfig,
    acdc_order,
    edge_attribution,
    fast_acdc,
    near_tau,
    patchable,
    prepare,
)
from circuitlab.models import load_model
from circuitlab.prompts import batch_from_ids

ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = Path(os.environ.get("PEER_VENV", "/tmp/venv-peer"))
PEER_DIR = Path(os.environ.get("PEER_DIR", ROOT.parent / "shared" / "peers" / "autocircuit"))

Result = dict[str, Any]

#: auto-circuit's default sweep: bases 1, 3, 5, 7, 9 × 10^-5 … 10^-2
SWEEP_20 = tuple(float(a) * 10.0 ** float(b) for a in (1, 3, 5, 7, 9) for b in (-5, -4, -3, -2))


@dataclass(frozen=True)
class Case:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_prompts: int
    seq_len: int
    taus: tuple[float, ...]


@dataclass(frozen=True)
class Settings:
    cases: tuple[Case, ...]

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Settings:
        del repeats  # one run per tool and τ: the peer's ACDC is the slow side
        if quick:
            return cls((Case("1-layer", 1, 32, 4, 4, 6, (1e-3,)),))
        return cls((
            Case("3-layer, 20 τ", 3, 64, 4, 16, 12, SWEEP_20),
            Case("B1, τ = 1e-2", 4, 128, 8, 32, 16, (1e-2,)),
        ))  # fmt: skip


def peer_missing() -> str | None:
    """Why the peer cannot run here, or None."""
    if not (PEER_VENV / "bin" / "python").exists():
        return f"no peer venv at {PEER_VENV}: run `bash {PEER_DIR}/setup.sh` (≈ 2 min)"
    if not (PEER_DIR / "peer_run.py").exists():
        return f"no peer harness at {PEER_DIR} (set PEER_DIR)"
    return None


def run_peer(case: Case, hf_dir: Path, out: Path, threads: int) -> dict[str, Any]:
    cmd = [
        str(PEER_VENV / "bin" / "python"), str(PEER_DIR / "peer_run.py"),
        "--n-layers", str(case.n_layers), "--d-model", str(case.d_model),
        "--n-heads", str(case.n_heads), "--n-prompts", str(case.n_prompts),
        "--seq-len", str(case.seq_len), "--n-corrupt", "2", "--seed", "0", "--data-seed", "1",
        "--edge-order", "canonical", "--threads", str(threads),
        "--taus", *(f"{t:g}" for t in case.taus), "--export-hf", str(hf_dir), "--out", str(out),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peer run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def hf_forward_s(hf_dir: Path, ids: torch.Tensor, n: int = 20) -> float:
    """Median wall time of one plain HF forward of the batch in this process (eager)."""
    hf = LlamaForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hf(input_ids=ids, attention_mask=mask)
        runs = []
        for _ in range(n):
            t0 = time.perf_counter()
            hf(input_ids=ids, attention_mask=mask)
            runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def compare_tau(
    peer_trace: list[list[Any]], ours: Any, edges: tuple[str, ...], tau: float
) -> dict[str, Any]:
    """Edge-by-edge comparison of one τ: the peer's ``[edge, faithfulness, removed]`` visits
    against circuitlab's `EdgeTrace`."""
    trace = ours.trace
    names = [edges[e] for e in trace.edge]
    same_order = names == [v[0] for v in peer_trace]
    first = next(
        (i for i, (v, r) in enumerate(zip(peer_trace, trace.removed, strict=True)) if v[2] != r),
        None,
    )
    upto = len(names) if first is None else first
    faith_diff = max(
        (abs(v[1] - f) for v, f in zip(peer_trace[:upto], trace.faithfulness, strict=False)),
        default=0.0,
    )
    differing = sum(v[2] != r for v, r in zip(peer_trace, trace.removed, strict=True))
    first_near = None
    if first is not None:
        b = trace.baseline[first]
        first_near = near_tau(trace.faithfulness[first], b, tau) or near_tau(
            peer_trace[first][1], b, tau
        )
    return {
        "tau": tau,
        "same_order": same_order,
        "n_checks": len(names),
        "differing_decisions": differing,
        "first_divergence": None if first is None else names[first],
        "first_divergence_near_tau": first_near,
        "max_faithfulness_diff_before_divergence": faith_diff,
        "n_near_tau": ours.n_near_tau,
    }


def run_case(case: Case, settings: Settings, tmp: Path, log: Callable[[str], None]) -> Result:
    hf_dir, out = tmp / f"{case.name}-hf", tmp / f"{case.name}-peer.json"
    log(f"  auto-circuit on {case.name} (τ = {', '.join(f'{t:g}' for t in case.taus)})")
    peer = run_peer(case, hf_dir, out, torch.get_num_threads())  # the same as ours
    lm = load_model(hf_dir)  # an exported directory: no tokenizer
    data = peer["data"]
    batch = batch_from_ids(data["clean"], data["corrupt"], data["answers"], data["wrong_answers"])
    pm = patchable(lm)
    ctx = prepare(pm, batch, "resample")
    edges = pm.graph.edges
    cfg = SweepConfig(tao_bases=tuple(case.taus), tao_exps=(0,), edge_order="autocircuit")
    log("  circuitlab: exact ACDC (shared sweep; one run per τ; circuitlab order), EAP")
    t0 = time.perf_counter()
    ours = fast_acdc(ctx, cfg, FastConfig(window=1))
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    singles = fast_acdc(ctx, cfg, FastConfig(window=1, share_sweep=False))
    singles_s = time.perf_counter() - t0
    if singles.scores != ours.scores:
        raise RuntimeError("the shared sweep and one run per τ disagree")
    default = fast_acdc(
        ctx, SweepConfig(tao_bases=tuple(case.taus), tao_exps=(0,)), FastConfig(window=1)
    )
    eap = edge_attribution(ctx, EAPConfig(metric="logit_diff"))
    fwd = hf_forward_s(hf_dir, batch.input_ids)

    per_tau = [
        compare_tau(peer["acdc"]["per_tau"][f"{tau:g}"]["trace"], r, edges, tau)
        for tau, r in zip(case.taus, ours.per_tau, strict=True)
    ]
    order_changes = [
        len(set(x.kept) ^ set(y.kept)) for x, y in zip(ours.per_tau, default.per_tau, strict=True)
    ]
    peer_eap = peer["eap_mask_gradient"]["scores"]
    eap_diff = max(abs(s + float(peer_eap[e])) for e, s in zip(edges, eap.scores, strict=True))
    eap_scale = max(abs(s) for s in eap.scores)
    peer_s = sum(min(peer["acdc"]["per_tau"][f"{t:g}"]["wall_s"]) for t in case.taus)
    peer_fwd = peer["hf_forward_s"]["median"]

    checks = [
        {
            "name": "visiting order = auto-circuit's (canonical)",
            "passed": all(p["same_order"] for p in per_tau) and acdc_order(pm.graph, "autocircuit")
            == [edges.index(v[0]) for v in peer["acdc"]["per_tau"][f"{case.taus[0]:g}"]["trace"]],
            "detail": f"{per_tau[0]['n_checks']} checks per τ",
            "tolerance": "identical",
        },
        {
            "name": "decisions = auto-circuit's, edge for edge",
            "passed": all(p["differing_decisions"] == 0 or p["first_divergence_near_tau"] for p in per_tau),
            "detail": f"{sum(p['differing_decisions'] for p in per_tau)} of "
            f"{sum(p['n_checks'] for p in per_tau)} decisions differ over {len(per_tau)} τ"
            + "".join(
                f"; τ={p['tau']:g}: first at {p['first_divergence']} (near τ: "
                f"{p['first_divergence_near_tau']})"
                for p in per_tau
                if p["differing_decisions"]
            )
            + "; max |Δfaith| "
            + f"{max(p['max_faithfulness_diff_before_divergence'] for p in per_tau):.1e}",
            "tolerance": "identical, or diverging first at a near-τ decision",
        },
        {
            "name": "EAP = −(auto-circuit mask-gradient scores)",
            "passed": eap_diff <= 1e-4 * max(eap_scale, 1e-6),
            "detail": f"max |ours + peer| {eap_diff:.1e} (max |score| {eap_scale:.1e})",
            "tolerance": "1e-4 relative",
        },
    ]  # fmt: skip
    ratios = [
        {"name": f"order effect at τ={t:g}: edges kept differently (circuitlab vs autocircuit order)",
         "value": float(n), "unit": "edges", "goal": None, "met": None}
        for t, n in zip(case.taus, order_changes, strict=True)
    ] + [
        {"name": "ACDC, circuitlab, one run per τ (fwd-eq of own HF forward)",
         "value": singles_s / fwd, "unit": "fwd-eq", "goal": None, "met": None},
        {"name": "ACDC, circuitlab, shared sweep (fwd-eq of own HF forward)",
         "value": ours_s / fwd, "unit": "fwd-eq", "goal": None, "met": None},
        {"name": "ACDC, auto-circuit, one run per τ (fwd-eq of own HF forward)",
         "value": peer_s / peer_fwd, "unit": "fwd-eq", "goal": None, "met": None},
        {"name": "auto-circuit / circuitlab, one run per τ each (fwd-eq)",
         "value": (peer_s / peer_fwd) / (singles_s / fwd), "unit": "×", "goal": ">= 3",
         "met": (peer_s / peer_fwd) / (singles_s / fwd) >= 3},
        {"name": "auto-circuit per τ / circuitlab shared sweep (fwd-eq)",
         "value": (peer_s / peer_fwd) / (ours_s / fwd), "unit": "×",
         "goal": ">= 5" if len(case.taus) >= 20 else None,
         "met": (peer_s / peer_fwd) / (ours_s / fwd) >= 5 if len(case.taus) >= 20 else None},
        {"name": "shared sweep: checks / one run per τ",
         "value": ours.stats.n_candidates / ours.stats.n_checks_unshared, "unit": "×",
         "goal": None, "met": None},
    ]  # fmt: skip
    return {
        "case": f"peer {case.name}",
        "setup": {
            "about": f"{case.n_prompts} prompts × {case.seq_len} tokens, {len(edges)} edges, "
            f"{len(case.taus)} τ, load {os.getloadavg()[0]:.2f}",
            "per_tau": per_tau,
            "order_changes": order_changes,
            "peer_versions": peer.get("versions"),
        },
        "timings": [
            {"name": "plain HF forward, this process", "runs_s": [fwd], "median_s": fwd},
            {"name": "plain HF forward, peer process", "runs_s": [peer_fwd], "median_s": peer_fwd},
            {"name": "circuitlab ACDC, shared sweep", "runs_s": [ours_s], "median_s": ours_s},
            {
                "name": "circuitlab ACDC, one run per τ",
                "runs_s": [singles_s],
                "median_s": singles_s,
            },
            {"name": "auto-circuit ACDC, one run per τ", "runs_s": [peer_s], "median_s": peer_s},
        ],
        "ratios": ratios,
        "checks": checks,
    }


def run(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    missing = peer_missing()
    if missing:
        log(f"  peer: skipped — {missing}")
        return [{"case": f"peer {c.name}", "skipped": missing} for c in settings.cases]
    with tempfile.TemporaryDirectory() as tmp:
        return [run_case(c, settings, Path(tmp), log) for c in settings.cases]
