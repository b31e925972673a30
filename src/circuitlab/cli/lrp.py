"""The neuron rules (`workflow/rules/lrp.smk`): the universal-neuron blacklist, LRP attribution,
circuit and faithfulness, and the contrastive circuits of behaviours."""

from __future__ import annotations

from pathlib import Path

import typer

from circuitlab.cli.app import (
    ATTRIBUTION_IN,
    BLACKLIST_IN,
    CHECKED_ROWS_IN,
    PARAMS_HELP,
    app,
    backend_option,
    device_option,
    job_names,
    load_stage_model,
    model_name_option,
    model_option,
    output_path,
    parse_params,
    task_option,
)
from circuitlab.errors import ConfigError, DatasetError


@app.command()
def blacklist(
    model: Path = model_option("blacklist"),
    device: str | None = device_option(),
    backend: str | None = backend_option("blacklist"),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `blacklist` section)"),
    model_name: str = model_name_option(),
    out: Path = typer.Option(..., callback=output_path, help="data/blacklists/{model}.json"),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/blacklist/{model}.json"
    ),
) -> None:
    """Universal neurons: top-k |activation| at the last position of most diverse prompts."""
    from circuitlab import tracking
    from circuitlab.blacklist.detect import detect_universal_neurons
    from circuitlab.blacklist.metrics import BlacklistMetrics
    from circuitlab.blacklist.settings import BlacklistConfig

    cfg = parse_params(BlacklistConfig, params)
    lm = load_stage_model(model, device, backend)
    found = detect_universal_neurons(
        lm,
        cfg.prompts,
        top_k=cfg.top_k,
        threshold_fraction=cfg.threshold_fraction,
        batch_size=cfg.batch_size,
    )
    found.save(out)
    per_layer: dict[str, int] = {}
    for layer, _ in found.pairs():
        per_layer[str(layer)] = per_layer.get(str(layer), 0) + 1
    tracking.log_metrics(
        "blacklist",
        {
            "n_neurons": len(found.pairs()),
            "n_detected": len(found.neurons),
            "n_known": len(found.known),
            "n_prompts": found.n_prompts,
            "stability": found.stability,
            "per_layer": per_layer,
        },
        metrics,
        config=cfg,
        run_name=f"blacklist/{model_name or model.stem}",
        schema=BlacklistMetrics,
    )


@app.command("lrp-attribution")
def lrp_attribution(
    model: Path = model_option("lrp_attribution"),
    device: str | None = device_option(),
    backend: str | None = backend_option("lrp_attribution"),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    blacklist_file: Path = typer.Option(
        None, "--blacklist", callback=BLACKLIST_IN, help="data/blacklists/{model}.json"
    ),
    params: str = typer.Option(
        "{}", help=PARAMS_HELP + " (the config's `lrp` section; `selection` is not read)"
    ),
    model_name: str = model_name_option(),
    task: str = task_option(),
    raw: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{task}/lrp.raw.safetensors"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/lrp_attribution/{model}/{task}.json"
    ),
) -> None:
    """LRP attributions of a task's train split (batched gradient × activation under the rules):
    the expensive half of an LRP circuit, which `lrp-circuit` selects from."""
    from circuitlab import tracking
    from circuitlab.blacklist.artifact import Blacklist
    from circuitlab.io import require
    from circuitlab.lrp.attribution import attribute_lrp
    from circuitlab.lrp.metrics import LrpAttributionMetrics
    from circuitlab.lrp.settings import LrpConfig
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(LrpConfig, params)
    rows = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model, device, backend)
    pairs: set[tuple[int, int]] = set()
    if blacklist_file is not None:
        bl = Blacklist.load(require(blacklist_file, "blacklist"))
        bl.check_shape(lm.dims)
        pairs = bl.pairs()
    name, task = job_names(data, model_name, task)
    attr, result = attribute_lrp(lm, rows, cfg, task=task, blacklist=pairs)
    attr.save(raw)
    config = cfg.model_dump(mode="json", exclude={"selection"})
    tracking.log_metrics(
        "lrp_attribution",
        result,
        metrics,
        config=config,
        run_name=f"lrp_attribution/{name}/{task}",
        schema=LrpAttributionMetrics,
    )


@app.command("lrp-circuit")
def lrp_circuit(
    raw: Path = typer.Option(
        ...,
        callback=ATTRIBUTION_IN,
        help="data/circuits/{model}/{task}/lrp.raw.safetensors",
    ),
    attribution: Path = typer.Option(
        ...,
        callback=ATTRIBUTION_IN,
        help="data/metrics/lrp_attribution/{model}/{task}.json (that step's metrics)",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `lrp` section)"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{task}/lrp.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/lrp_circuit/{model}/{task}.json"
    ),
    plot: Path = typer.Option(None, callback=output_path, help="PNG: circuit neurons per layer"),
) -> None:
    """LRP neuron circuit: `lrp.selection` applied to saved attributions (no model is loaded, so a
    new selection costs seconds)."""
    from circuitlab import tracking
    from circuitlab.io import require
    from circuitlab.lrp.attribution import Attributions
    from circuitlab.lrp.discover import select_lrp
    from circuitlab.lrp.metrics import LrpCircuitMetrics
    from circuitlab.lrp.settings import LrpConfig
    from circuitlab.report.plots import neurons_per_layer

    cfg = parse_params(LrpConfig, params)
    attr = Attributions.load(require(raw, "lrp_attribution"))
    step = tracking.read_metrics(require(attribution, "lrp_attribution"))
    name, task = job_names(raw.parent, model_name, task)
    circuit, result = select_lrp(attr, cfg, step, model=name, task=task)
    circuit.save(out)
    if plot is not None:
        neurons_per_layer(circuit.per_layer(), plot, f"{name} / {task}: LRP circuit neurons")
    tracking.log_metrics(
        "lrp_circuit",
        result,
        metrics,
        config=cfg,
        run_name=f"lrp_circuit/{name}/{task}",
        schema=LrpCircuitMetrics,
    )


@app.command("lrp-faithfulness")
def lrp_faithfulness(
    model: Path = model_option("lrp_faithfulness"),
    device: str | None = device_option(),
    backend: str | None = backend_option("lrp_faithfulness"),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    raw: Path = typer.Option(
        ...,
        callback=ATTRIBUTION_IN,
        help="data/circuits/{model}/{task}/lrp.raw.safetensors",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `lrp` section)"),
    faithfulness: str = typer.Option("{}", help=PARAMS_HELP + " (`faithfulness` section)"),
    seed: int = typer.Option(0),
    model_name: str = model_name_option(),
    task: str = task_option(),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/lrp_faithfulness/{model}/{task}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: faithfulness curves, circuit vs random"
    ),
) -> None:
    """Faithfulness of LRP circuits of growing size on the test split, against random controls."""
    from circuitlab import tracking
    from circuitlab.io import require
    from circuitlab.lrp.attribution import Attributions, options
    from circuitlab.lrp.faithfulness import evaluate_faithfulness
    from circuitlab.lrp.metrics import FaithfulnessMetrics
    from circuitlab.lrp.selection import aggregate
    from circuitlab.lrp.settings import FaithfulnessConfig, LrpConfig
    from circuitlab.report.plots import faithfulness_curves
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(LrpConfig, params)
    fcfg = parse_params(FaithfulnessConfig, faithfulness, "--faithfulness")
    rows = load_rows(data, rule="check_dataset")
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not train or not test:
        raise DatasetError(f"{data}: faithfulness needs both train and test rows")
    attr = Attributions.load(require(raw, "lrp_attribution"))
    lm = load_stage_model(model, device, backend)
    name, task = job_names(data, model_name, task)
    report = evaluate_faithfulness(
        lm,
        train,
        test,
        aggregate(attr, "mean"),
        opts=options(cfg),
        sizes=fcfg.sizes,
        ablations=fcfg.ablations,
        random_seeds=fcfg.random_seeds,
        calibration_neurons=fcfg.calibration_neurons,
        target=fcfg.target_faithfulness,
        seed=seed,
    )
    faithfulness_curves(report, plot, f"{name} / {task}")
    tracking.log_metrics(
        "lrp_faithfulness",
        report,
        metrics,
        config={"lrp": cfg.model_dump(mode="json"), "faithfulness": fcfg.model_dump(mode="json")},
        run_name=f"lrp_faithfulness/{name}/{task}",
        schema=FaithfulnessMetrics,
    )


@app.command("contrastive-circuit")
def contrastive_circuit(
    model: Path = model_option("contrastive_circuit"),
    device: str | None = device_option(),
    backend: str | None = backend_option("contrastive_circuit"),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    top_k: int = typer.Option(200, min=1),
    skip_layers: str = typer.Option("", help="comma-separated layers to exclude"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{behaviour}/contrastive.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/contrastive_circuit/{model}/{behaviour}.json"
    ),
) -> None:
    """Contrastive neurons of a behaviour: mean activation, positive minus negative prompts."""
    from circuitlab import tracking
    from circuitlab.lrp.discover import discover_contrastive
    from circuitlab.lrp.metrics import ContrastiveMetrics
    from circuitlab.tasks.io import load_rows

    try:
        skip = [int(x) for x in skip_layers.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"--skip-layers must be comma-separated integers, got {skip_layers!r}"
        ) from exc
    rows = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model, device, backend)
    name, behaviour = job_names(data, model_name, task)
    circuit = discover_contrastive(
        lm, rows, model=name, behaviour=behaviour, top_k=top_k, skip_layers=skip
    )
    circuit.save(out)
    tracking.log_metrics(
        "contrastive_circuit",
        {
            "n_neurons": len(circuit),
            "n_prompts": circuit.n_prompts,
            "max_abs_difference": max(abs(v) for v in circuit.neurons.values()),
            "neurons_per_layer": {str(k): v for k, v in circuit.per_layer().items()},
        },
        metrics,
        config={"top_k": top_k, "skip_layers": skip},
        run_name=f"contrastive_circuit/{name}/{behaviour}",
        schema=ContrastiveMetrics,
    )
