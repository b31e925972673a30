"""The LRP circuit stages as pure functions: (model, rows, config slice) → circuit + metrics."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from circuitlab.config import LrpConfig
from circuitlab.errors import DatasetError
from circuitlab.lrp.attribution import AttributionOptions, Attributions, attribute_rows
from circuitlab.lrp.attribution import last_activations as _last_activations
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.lrp.selection import aggregate, contrastive_difference, select, select_contrastive
from circuitlab.models.loading import LoadedModel
from circuitlab.tasks.base import TaskRow


def options(
    cfg: LrpConfig, skip_neurons: Collection[tuple[int, int]] = (), **over: Any
) -> AttributionOptions:
    """Attribution options from the `lrp` config section (plus a blacklist)."""
    base: dict[str, Any] = dict(
        metric=cfg.metric,
        attention_rule=cfg.attention_rule,
        filter_bos=cfg.filter_bos,
        last_n_positions=cfg.last_n_positions,
        top_k_per_layer=cfg.top_k_per_layer,
        skip_layers=frozenset(cfg.skip_layers),
        skip_neurons=frozenset(skip_neurons),
        batch_size=cfg.batch_size,
    )
    return AttributionOptions(**{**base, **over})


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
    """LRP circuit of `rows` (the train split): the circuit, the raw attributions and metrics."""
    train = [r for r in rows if r.split == "train"]
    if not train:
        raise DatasetError(f"{task}: no train rows to discover a circuit on")
    t0 = time.perf_counter()
    attr = attribute_rows(lm, train, options(cfg, blacklist), progress=progress)
    seconds = time.perf_counter() - t0
    dims = lm.dims
    circuit = circuit_from_attributions(
        attr, cfg, model=model, task=task, n_layers=dims.n_layers, d_mlp=dims.d_mlp
    )
    grid_total = float(aggregate(attr, "mean").abs().sum())
    kept = sum(abs(v) for v in circuit.neurons.values())
    metrics = {
        "n_neurons": len(circuit),
        "n_prompts": circuit.n_prompts,
        "n_positions": attr.n_positions,
        "share_of_all_neurons": len(circuit) / (dims.n_neurons * attr.n_positions),
        "share_of_total_attribution": kept / grid_total if grid_total else 0.0,
        "metric_mean": circuit.metric_value,
        "attribution_sum": float(aggregate(attr, "mean").sum()),
        "blacklisted": len(blacklist),
        "attribution_seconds": seconds,
        "neurons_per_layer": {str(k): v for k, v in circuit.per_layer().items()},
    }
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
