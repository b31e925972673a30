"""The edge-circuit stage as a pure function: (model, rows, `acdc` config, method) → artifact.

Discovery runs on (at most ``n_prompts`` of) the train split, prepared once with the
configured ablation. Methods are plain callables in `METHODS` (``PatchContext, AcdcConfig →
CircuitArtifact`` fields); each returns edge scores where *higher = more important*:

* ``acdc`` — exact fast ACDC (`circuitlab.acdc.fast`): the same decisions as sequential ACDC;
  one circuit per τ, prune score = smallest τ that removed the edge (``inf`` = never);
* ``acdc_approx`` / ``acdc_window`` — the approximations of `circuitlab.acdc.approx`
  (group testing; windowed), same outputs;
* ``head_pruning`` — greedy head pruning; the circuit is every edge *not leaving a pruned
  head* (edges out of kept heads, and out of ``Resid Start`` and the MLPs, which head pruning
  never removes); score = ``|Δmetric|`` of the edge's source head (``inf`` for non-heads);
* ``eap`` — edge attribution patching; score = ``|score|`` (the signed scores' convention,
  `circuitlab.acdc.eap.SIGN_CONVENTION`, is in ``details.sign``, the signed scores in storage
  order in ``details.signed_scores``); circuits = the top
  ``eap_sizes`` fractions of edges by score.
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from circuitlab.acdc.artifact import (  # noqa: F401 (nearest: part of this module's API)
    CircuitArtifact,
    EdgeCircuit,
    ScoreKind,
    nearest,
)
from circuitlab.acdc.patch import PatchContext, patchable, prepare_rows
from circuitlab.acdc.sequential import ACDCResult, SweepConfig
from circuitlab.acdc.settings import ACDC_METHOD_MODULES, ACDC_METHODS, AcdcConfig
from circuitlab.errors import ConfigError, DatasetError
from circuitlab.models.loading import LoadedModel
from circuitlab.types import TaskRow

log = logging.getLogger(__name__)

Found = dict[str, Any]  # the method-specific fields of a CircuitArtifact
Method = Callable[[PatchContext, AcdcConfig], Found]


def sample_rows(
    rows: Sequence[TaskRow], n: int, seed: int, *, setting: str = "", task: str = ""
) -> list[TaskRow]:
    """At most ``n`` rows, a seeded sample in file order (all of them when there are fewer).
    A cap that drops rows says so in a log line naming the ``setting`` that caps them."""
    if len(rows) <= n:
        return list(rows)
    log.info(
        "%s: using %d of %d %s rows (%s = %d caps them; raise it to use more)",
        task or "rows",
        n,
        len(rows),
        rows[0].split,
        setting or "the cap",
        n,
    )
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def acdc_config(cfg: AcdcConfig, *, trace: bool = False) -> SweepConfig:
    return SweepConfig(
        tao_bases=tuple(cfg.tao_bases),
        tao_exps=tuple(cfg.tao_exps),
        faithfulness=cfg.faithfulness,
        edge_order=cfg.edge_order,
        trace=trace,
    )


def _from_acdc(result: ACDCResult, cfg: AcdcConfig) -> Found:
    raw = result.to_json()
    details = {
        k: v
        for k, v in raw.items()
        if k not in ("scores", "taus", "method", "n_edges", "n_forward", "seconds")
    }
    circuits = tuple(
        EdgeCircuit(f"tau={r.tau:g}", r.kept, r.tau, r.faithfulness, r.n_near_tau, r.trace)
        for r in result.per_tau
    )
    return {
        "scores": result.scores,
        "score_kind": "prune_tau",
        "circuits": circuits,
        "n_forward": result.n_forward,
        "n_backward": 0,
        "metric_values": {f"faithfulness_tau={r.tau:g}": r.faithfulness for r in result.per_tau},
        "details": details,
    }


def method_module(method: str) -> Any:
    """The module that runs ``method``, imported by name (`ACDC_METHOD_MODULES`)."""
    return importlib.import_module(ACDC_METHOD_MODULES[method])


def run_acdc(ctx: PatchContext, cfg: AcdcConfig) -> Found:
    fast = method_module("acdc")
    opts = fast.FastConfig(window=cfg.window, max_window=cfg.max_window)
    return _from_acdc(fast.fast_acdc(ctx, acdc_config(cfg, trace=cfg.trace), opts), cfg)


def run_acdc_approx(ctx: PatchContext, cfg: AcdcConfig) -> Found:
    """ACDC approximated by group testing (``acdc.approx_variant``: plain or gradient-guided)."""
    approx = method_module("acdc_approx")
    opts = approx.ApproxConfig(
        variant=cfg.approx_variant, window=cfg.approx_window, risk=cfg.approx_risk
    )
    return _from_acdc(approx.approx_acdc(ctx, acdc_config(cfg), opts), cfg)


def run_acdc_window(ctx: PatchContext, cfg: AcdcConfig) -> Found:
    """ACDC approximated by testing windows of edges independently."""
    approx = method_module("acdc_window")
    opts = approx.ApproxConfig(variant="window", window=cfg.approx_window)
    return _from_acdc(approx.approx_acdc(ctx, acdc_config(cfg), opts), cfg)


def run_head_pruning(ctx: PatchContext, cfg: AcdcConfig) -> Found:
    heads = method_module("head_pruning")
    opts = heads.HeadPruningConfig(threshold=cfg.head_threshold, metric=cfg.head_metric)
    res = heads.prune_heads(ctx, opts)
    graph = ctx.graph
    src_names = [graph.sources[int(s)] for s in graph.edge_src.tolist()]
    scores = tuple(abs(res.deltas[s]) if s in res.deltas else math.inf for s in src_names)
    pruned = set(res.pruned)
    kept = tuple(e for e, s in zip(graph.edges, src_names, strict=True) if s not in pruned)
    circuit = EdgeCircuit("heads", kept, None, res.final_metric)
    return {
        "scores": scores,
        "score_kind": "head_delta",
        "circuits": (circuit,),
        "n_forward": res.n_forward,
        "n_backward": 0,
        "metric_values": {"initial": res.initial_metric, "final": res.final_metric},
        "details": {"kept_heads": ",".join(res.kept), "n_pruned_heads": len(res.pruned)},
    }


def top_edges(edges: Sequence[str], scores: Sequence[float], n: int) -> tuple[str, ...]:
    """The ``n`` highest-scoring edges (ties in storage order), returned in storage order."""
    order = sorted(range(len(edges)), key=lambda i: -scores[i])[:n]
    return tuple(edges[i] for i in sorted(order))


def run_eap(ctx: PatchContext, cfg: AcdcConfig) -> Found:
    eap = method_module("eap")
    res = eap.edge_attribution(ctx, eap.EAPConfig(metric=cfg.eap_metric, ig_steps=cfg.eap_ig_steps))
    scores = tuple(abs(s) for s in res.scores)
    sizes = sorted({max(1, round(f * len(res.edges))) for f in cfg.eap_sizes})
    circuits = tuple(
        EdgeCircuit(f"top={n}", top_edges(res.edges, scores, n), None, None) for n in sizes
    )
    return {
        "scores": scores,
        "score_kind": "abs_attribution",
        "circuits": circuits,
        "n_forward": res.n_forward,
        "n_backward": res.n_backward,
        "metric_values": {"clean": res.clean_metric},
        "details": {
            "metric": res.metric,
            "ig_steps": res.ig_steps,
            "sign": eap.SIGN_CONVENTION,
            "signed_scores": list(res.scores),  # storage order
        },
    }


METHODS: dict[str, Method] = {
    "acdc": run_acdc,
    "acdc_approx": run_acdc_approx,
    "acdc_window": run_acdc_window,
    "head_pruning": run_head_pruning,
    "eap": run_eap,
}
assert tuple(METHODS) == ACDC_METHODS == tuple(ACDC_METHOD_MODULES)


def discover_artifact(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    cfg: AcdcConfig,
    method: str,
    *,
    model: str = "",
    task: str = "",
) -> CircuitArtifact:
    """Run ``method`` on the train split. ConfigError for an unknown method, DatasetError
    for no train rows (or rows the patch layer refuses), ModelError for an architecture the
    graph does not support."""
    if method not in METHODS:
        raise ConfigError(f"unknown ACDC method {method!r}; choose one of {list(METHODS)}")
    available = [r for r in rows if r.split == "train"]
    train = sample_rows(available, cfg.n_prompts, cfg.seed, setting="acdc.n_prompts", task=task)
    if not train:
        raise DatasetError(f"{task or 'dataset'}: no train rows to discover an edge circuit on")
    start = time.perf_counter()
    pm = patchable(lm)
    ctx = prepare_rows(pm, train, cfg.ablation)
    found = METHODS[method](ctx, cfg)
    kind: ScoreKind = found.pop("score_kind")
    return CircuitArtifact(
        method=method,
        model=model,
        task=task,
        edges=ctx.graph.edges,
        score_kind=kind,
        seconds=time.perf_counter() - start,
        n_prompts=len(train),
        n_prompts_available=len(available),
        params=cfg.discovery_params(method),
        **found,
    )


def circuit_metrics(art: CircuitArtifact) -> dict[str, Any]:
    """The numbers of one discovery run (nested dicts of scalars, for `tracking`)."""
    details = {k: v for k, v in art.details.items() if isinstance(v, int | float | str | bool)}
    return {
        "method": art.method,
        "n_edges": len(art.edges),
        "n_prompts": art.n_prompts,
        "n_prompts_available": art.n_prompts_available,
        "seconds": round(art.seconds, 4),
        "n_forward": art.n_forward,
        "n_backward": art.n_backward,
        "circuits": {
            f"{i:02d}": {
                "label": c.label,
                "tau": c.tau,
                "n_kept": len(c.kept),
                "metric": c.faithfulness,
            }
            for i, c in enumerate(art.circuits)
        },
        "details": details,
    }


def discover(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    cfg: AcdcConfig,
    method: str,
    *,
    model: str = "",
    task: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(artifact JSON, metrics) of one method on the train split (see `discover_artifact`)."""
    art = discover_artifact(lm, rows, cfg, method, model=model, task=task)
    return art.to_json(), circuit_metrics(art)
