"""The CAA ↔ circuit rule (`workflow/rules/compare.smk`)."""

from __future__ import annotations

from pathlib import Path

import typer

from circuitlab.cli.app import (
    CAA_IN,
    CHECKED_ROWS_IN,
    PARAMS_HELP,
    app,
    backend_option,
    circuit_input,
    device_option,
    job_names,
    load_stage_model,
    model_name_option,
    model_option,
    output_path,
    parse_params,
    task_option,
)
from circuitlab.errors import ConfigError


@app.command()
def compare(
    model: Path = model_option("compare"),
    device: str | None = device_option(),
    backend: str | None = backend_option("compare"),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    circuits: list[Path] = typer.Option(
        ..., help="data/circuits/{model}/{behaviour}/{method}.json (repeat per circuit)"
    ),
    vectors: Path = typer.Option(
        ..., callback=CAA_IN, help="data/caa/{model}/{behaviour}.safetensors"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `compare` section)"),
    steering: str = typer.Option(
        "{}",
        help=PARAMS_HELP + " (the config's `steering` section: which circuit neurons each "
        "direction scales, and the budget that caps the matched effect's KL)",
    ),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/compare/{model}/{behaviour}.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/compare/{model}/{behaviour}.json"
    ),
    pareto_plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: effect vs side effect per method"
    ),
    overlap_plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: overlap heatmap per layer"
    ),
) -> None:
    """CAA vectors vs neuron circuits of a behaviour: overlaps with permutation nulls, sparse
    decomposition, and circuit steering vs CAA vs the circuit-rebuilt vector per unit KL."""
    from circuitlab import tracking
    from circuitlab.compare.artifact import CompareReport
    from circuitlab.compare.settings import CompareConfig
    from circuitlab.compare.stage import compare_behaviour, metrics_view
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.report.plots import compare_overlap, compare_pareto
    from circuitlab.steering.caa import load_vectors
    from circuitlab.steering.settings import SteeringConfig
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(CompareConfig, params)
    steering_cfg = parse_params(SteeringConfig, steering, "--steering")
    # each circuit by the method its artifact records (lrp, contrastive), not its file name
    by_path = {path: NeuronCircuit.load(circuit_input(path)) for path in circuits}
    names = [c.method for c in by_path.values()]
    if len(set(names)) != len(names):
        raise ConfigError(f"--circuits must be circuits of distinct methods, got {names}")
    loaded = {c.method: c for c in by_path.values()}
    tensors, _meta = load_vectors(vectors)
    rows = load_rows(data, rule="check_dataset")
    lm = load_stage_model(model, device, backend)
    name, behaviour = job_names(data, model_name, task)
    report = compare_behaviour(lm, rows, loaded, tensors, cfg, steering_cfg)
    title = f"{name} / {behaviour}: CAA vs circuit"
    compare_pareto(report, pareto_plot, title)
    compare_overlap(report, overlap_plot, title)
    CompareReport.build(
        model=name,
        behaviour=behaviour,
        circuits={c.method: str(p) for p, c in by_path.items()},
        vectors=str(vectors),
        params=cfg.model_dump(mode="json"),
        **report,
    ).save(out)
    tracking.log_metrics(
        "compare", metrics_view(report), metrics, config=cfg, run_name=f"compare/{name}/{behaviour}"
    )
