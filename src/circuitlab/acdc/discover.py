"""The edge-circuit stage as a pure function: (model, rows, `acdc` config, method) → artifact.

Discovery runs on (at most ``n_prompts`` of) the train split, prepared once with the
configured ablation. The methods are the registry's (`circuitlab.acdc.registry`: one file per
method in `circuitlab.acdc.methods`); each entry's ``run`` returns the method's fields of a
`CircuitArtifact`, with edge scores where *higher = more important*: τ sweeps give prune
scores (the smallest τ that removed the edge, ``inf`` = never) and one circuit per τ; ranking
methods give ``|score|`` (the signed scores and their convention,
`circuitlab.acdc.eap.SIGN_CONVENTION`, in ``details``) and circuits at their ``sizes``; head
pruning gives its source head's ``|Δmetric|`` and one circuit.
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from circuitlab.acdc.artifact import (  # noqa: F401 (nearest: part of this module's API)
    CircuitArtifact,
    EdgeCircuit,
    ScoreKind,
    nearest,
)
from circuitlab.acdc.backend import patchable
from circuitlab.acdc.methods._ranking import top_edges  # noqa: F401 (part of this API)
from circuitlab.acdc.patch import prepare_rows
from circuitlab.acdc.registry import get_method
from circuitlab.errors import DatasetError
from circuitlab.models.loading import LoadedModel
from circuitlab.types import TaskRow

if TYPE_CHECKING:
    from circuitlab.acdc.settings import AcdcConfig

log = logging.getLogger(__name__)


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


def method_module(method: str) -> Any:
    """The file of ``method`` (`circuitlab.acdc.registry`), imported."""
    return importlib.import_module(get_method(method).module)


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
    entry = get_method(method)  # ConfigError for an unknown name
    available = [r for r in rows if r.split == "train"]
    train = sample_rows(available, cfg.n_prompts, cfg.seed, setting="acdc.n_prompts", task=task)
    if not train:
        raise DatasetError(f"{task or 'dataset'}: no train rows to discover an edge circuit on")
    start = time.perf_counter()
    pm = patchable(lm, kv_edges=cfg.kv_edges)
    ctx = prepare_rows(pm, train, cfg.ablation)
    found = entry.run(ctx, cfg, cfg.method_settings(method))
    kind: ScoreKind = found.pop("score_kind")
    found["details"] = {**found["details"], "kind": entry.kind}  # sweep, ranking or single
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
