"""The LRP circuit stages as pure functions: (model, rows, config slice) → circuit + metrics."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from circuitlab.errors import DatasetError
from circuitlab.lrp.attribution import (  # noqa: F401 (options, attribute_lrp: the stage API)
    Attributions,
    attribute_lrp,
    options,
)
from circuitlab.lrp.attribution import last_activations as _last_activations
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.lrp.selection import aggregate, contrastive_difference, select, select_contrastive
from circuitlab.lrp.settings import LrpConfig
from circuitlab.models.loading import LoadedModel
from circuitlab.types import TaskRow


def circuit_from_attributions(
    attr: Attributions, cfg: LrpConfig, *, model: str, task: str, n_layers: int, d_mlp: int
) -> NeuronCircuit:
    """Aggregate and select (no model needed: a new selection reuses saved attributions)."""
    sel = cfg.selection
    per_prompt = sel.threshold if sel.aggregation == "any" and sel.method == "percentage" else None
    grid = aggregate(attr, sel.aggregation, per_prompt_threshold=per_prompt)
    mean_metric = float(attr.metric.mean())
    neurons = select(
        grid,
        sel.method,
        threshold=sel.threshold,
        top_k=sel.top_k,
        per_layer_topk=sel.per_layer_topk,
        reference=mean_metric,
    )
    return NeuronCircuit(
        neurons=neurons,
        model=model,
        task=task,
        method="lrp",
        params=cfg.model_dump(mode="json"),
        metric_value=mean_metric,
        n_prompts=int(attr.scores.shape[0]),
        n_layers=n_layers,
        d_mlp=d_mlp,
    )


def select_lrp(
    attr: Attributions, cfg: LrpConfig, attribution: dict[str, Any], *, model: str, task: str
) -> tuple[NeuronCircuit, dict[str, Any]]:
    """The cheap half: the circuit `cfg.selection` picks from saved attributions (no model),
    and its metrics (with the attribution step's ``attribution``)."""
    _, n_layers, _, d_mlp = attr.scores.shape
    circuit = circuit_from_attributions(
        attr, cfg, model=model, task=task, n_layers=int(n_layers), d_mlp=int(d_mlp)
    )
    grid_total = float(aggregate(attr, "mean").abs().sum())
    kept = sum(abs(v) for v in circuit.neurons.values())
    metrics = {
        "n_neurons": len(circuit),
        "n_prompts": circuit.n_prompts,
        "n_positions": attr.n_positions,
        "share_of_all_neurons": len(circuit) / (n_layers * d_mlp * attr.n_positions),
        "share_of_total_attribution": kept / grid_total if grid_total else 0.0,
        "metric_mean": circuit.metric_value,
        "attribution_sum": float(aggregate(attr, "mean").sum()),
        "blacklisted": attribution["blacklisted"],
        "attribution_seconds": attribution["attribution_seconds"],
        "neurons_per_layer": {str(k): v for k, v in circuit.per_layer().items()},
    }
    return circuit, metrics


def discover_lrp(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    cfg: LrpConfig,
    *,
    model: str,
    task: str,
    blacklist: Collection[tuple[int, int]] = (),
    progress: bool = True,
) -> tuple[NeuronCircuit, Attributions, dict[str, Any]]:
    """LRP circuit of `rows` (the train split): the circuit, the raw attributions and metrics
    (`attribute_lrp` then `select_lrp`; the pipeline runs them as two rules)."""
    attr, attribution = attribute_lrp(
        lm, rows, cfg, task=task, blacklist=blacklist, progress=progress
    )
    circuit, metrics = select_lrp(attr, cfg, attribution, model=model, task=task)
    return circuit, attr, metrics


def discover_contrastive(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    *,
    model: str,
    behaviour: str,
    top_k: int,
    skip_layers: Collection[int] = (),
    batch_size: int = 32,
) -> NeuronCircuit:
    """Contrastive neurons of a behaviour: mean last-token activation of the train prompts with
    `meta.polarity == "positive"` minus those with `"negative"`, top-k by |difference|."""
    train = [r for r in rows if r.split == "train"]
    pos = [r for r in train if r.meta.get("polarity") == "positive"]
    neg = [r for r in train if r.meta.get("polarity") == "negative"]
    if not pos or not neg:
        raise DatasetError(
            f"{behaviour}: contrastive discovery needs train rows with meta.polarity 'positive' "
            f"and 'negative' (found {len(pos)} and {len(neg)})"
        )
    diff = contrastive_difference(
        _last_activations(lm, pos, batch_size), _last_activations(lm, neg, batch_size)
    )
    neurons = select_contrastive(diff, top_k, frozenset(skip_layers))
    dims = lm.dims
    return NeuronCircuit(
        neurons=neurons,
        model=model,
        task=behaviour,
        method="contrastive",
        params={"top_k": top_k, "skip_layers": sorted(skip_layers)},
        metric_value=0.0,
        n_prompts=len(pos) + len(neg),
        n_layers=dims.n_layers,
        d_mlp=dims.d_mlp,
    )
