"""The edge-circuit rules (`workflow/rules/acdc.smk`): discover a task's circuits with one
method; evaluate all of them."""

from __future__ import annotations

from pathlib import Path

import typer

from circuitlab.cli.app import (
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
    output_paths,
    parse_params,
    task_option,
)
from circuitlab.errors import ConfigError


@app.command("acdc-circuit")
def acdc_circuit(
    method: str = typer.Option(..., help="an edge method (`circuitlab acdc-methods` lists them)"),
    model: Path = model_option(),
    device: str | None = device_option(),
    backend: str | None = backend_option(),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `acdc` section)"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{task}/{method}.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/acdc_circuit/{model}/{task}/{method}.json"
    ),
) -> None:
    """Edge circuit of a task's train split with one method (ACDC variants, head pruning, EAP)."""
    from circuitlab import tracking
    from circuitlab.acdc.artifact import CircuitArtifact, save_circuit
    from circuitlab.acdc.discover import discover
    from circuitlab.acdc.scores import DiscoveryMetrics
    from circuitlab.acdc.settings import acdc_model
    from circuitlab.tasks.io import load_rows

    # the section's keys and this method's own (ConfigError naming the known methods): the job
    # loads its own method's file, no other
    cfg = parse_params(acdc_model((method,)), params)
    rows = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model, device, backend)
    name, task = job_names(data, model_name, task)
    result, numbers = discover(lm, rows, cfg, method, model=name, task=task)
    art = CircuitArtifact.from_json(result, f"{method} circuit")
    save_circuit(out, art)
    tracking.log_metrics(
        "acdc_circuit",
        numbers,
        metrics,
        config=cfg,
        run_name=f"acdc_circuit/{name}/{task}/{method}",
        schema=DiscoveryMetrics,
    )


@app.command("acdc-evaluate")
def acdc_evaluate(
    model: Path = model_option(),
    device: str | None = device_option(),
    backend: str | None = backend_option(),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    circuits: list[Path] = typer.Option(
        ..., help="data/circuits/{model}/{task}/{method}.json (repeat the option per method)"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `acdc` section)"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/acdc_evaluate/{model}/{task}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: faithfulness vs circuit size per method"
    ),
    dots: list[Path] = typer.Option(
        None,
        callback=output_paths,
        help="data/circuits/{model}/{task}/{method}.dot, one per --circuits in the same order: "
        "the reference circuit (`reference_tau`) as Graphviz DOT, a PNG beside it when "
        "Graphviz's `dot` is installed",
    ),
) -> None:
    """Faithfulness of every method's edge circuits on the test split, random controls, agreement;
    the reference circuit of each method drawn."""
    from circuitlab import tracking
    from circuitlab.acdc.artifact import load_circuit, render_png, to_dot
    from circuitlab.acdc.evaluate import evaluate_circuits
    from circuitlab.acdc.scores import EdgeEvaluation
    from circuitlab.acdc.settings import acdc_model
    from circuitlab.io import write_text_atomic
    from circuitlab.report.plots import acdc_faithfulness
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(acdc_model(()), params)  # the section's keys: no method's file
    if dots and len(dots) != len(circuits):
        raise ConfigError(f"--dots: {len(dots)} paths for {len(circuits)} --circuits")
    arts = [load_circuit(p) for p in circuits]
    rows = load_rows(data, rule="check_dataset")
    lm = load_stage_model(model, device, backend)
    name, task = job_names(data, model_name, task)
    report = evaluate_circuits(lm, rows, arts, cfg)
    acdc_faithfulness(report, plot, f"{name} / {task}: edge circuits (test split)")
    for art, dot in zip(arts, dots or [], strict=False):
        text = to_dot(art, art.reference_circuit(cfg.reference_tau))
        write_text_atomic(dot, text)
        report["methods"][art.method]["rendered"] = render_png(text, dot.with_suffix(".png"))
    tracking.log_metrics(
        "acdc_evaluate",
        report,
        metrics,
        config=cfg,
        run_name=f"acdc_evaluate/{name}/{task}",
        schema=EdgeEvaluation,
    )


@app.command("acdc-methods")
def acdc_methods(
    as_json: bool = typer.Option(False, "--json", help="JSON: name, kind, settings with defaults"),
) -> None:
    """The edge methods (`circuitlab.acdc.registry`): what each does, its own settings
    (``acdc.<method>.*``) and section keys, its score, its cost, whether it runs by default."""
    import json

    from circuitlab.acdc.registry import edge_methods, methods_table

    if not as_json:
        typer.echo(methods_table())
        return
    out = {
        name: {
            "kind": m.kind,
            "default": m.default,
            "summary": m.summary,
            "score": m.score,
            "cost": m.cost,
            "settings": m.settings().model_dump(mode="json"),
            "shared": list(m.shared),
        }
        for name, m in edge_methods().items()
    }
    typer.echo(json.dumps(out, indent=1, ensure_ascii=False))


@app.command("export-mib")
def export_mib(
    circuit: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="data/circuits/…/{method}.json"
    ),
    model: Path = typer.Option(
        ..., exists=True, file_okay=False, help="the model directory (d_model from its config.json)"
    ),
    out: Path = typer.Option(..., callback=output_path, help="MIB circuit JSON to write"),
    reference_tau: float = typer.Option(0.01, help="which τ's circuit is marked in_graph (sweeps)"),
) -> None:
    """Write an edge circuit as MIB's circuit-submission JSON (importance scores, EAP-IG's
    `Graph.to_json` layout), for MIB's `run_evaluation.py --circuit-files` or its leaderboard.
    MIB's graph has K/V inputs per query head: discover grouped-query models with
    `acdc.kv_edges: query_head`."""
    from circuitlab.acdc.artifact import load_circuit
    from circuitlab.acdc.mib import to_mib_json
    from circuitlab.io import read_json, write_json

    cfg = read_json(model / "config.json")
    d_model = cfg.get("hidden_size", cfg.get("n_embd"))
    if not isinstance(d_model, int):
        raise ConfigError(f"{model}/config.json has no hidden_size or n_embd")
    art = load_circuit(circuit)
    write_json(out, to_mib_json(art, d_model=d_model, reference_tau=reference_tau))
    typer.echo(f"wrote {out} ({len(art.edges)} edges, {art.method})")
