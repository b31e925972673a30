"""The steering rules (`workflow/rules/steering.smk`): neuron steering of circuits, CAA vectors
and their steering, the summary over tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from circuitlab.cli.app import (
    CAA_IN,
    CHECKED_ROWS_IN,
    CIRCUIT_IN,
    PARAMS_HELP,
    THREADS_HELP,
    _set_threads,
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


def _test_sets(paths: list[Path] | None, exclude: str) -> dict[str, Any]:
    """Other tasks' test rows (the leakage matrix), keyed by file stem."""
    from circuitlab.tasks.io import load_rows

    return {
        p.stem: load_rows(p, rule="check_dataset", split="test")
        for p in (paths or [])
        if p.stem != exclude
    }


def _write_steering(
    report: dict[str, Any], out: Path, metrics: Path, plot: Path, stage: str, run: str, cfg: Any
) -> None:
    from circuitlab import tracking
    from circuitlab.report.plots import steering_dose_response
    from circuitlab.steering.artifact import SteeringReport
    from circuitlab.steering.stages import metrics_view

    steering_dose_response(report, plot, run)
    SteeringReport.build(**report).save(out)
    tracking.log_metrics(stage, metrics_view(report), metrics, config=cfg, run_name=run)


@app.command()
def steering(
    model: Path = model_option("steering"),
    device: str | None = device_option(),
    backend: str | None = backend_option("steering"),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{name}.jsonl (checked rows)",
    ),
    circuit: Path = typer.Option(
        ..., callback=CIRCUIT_IN, help="data/circuits/{model}/{name}/{method}.json"
    ),
    others: list[Path] = typer.Option(
        None, help="data/datasets/{model}/{task}.jsonl of the other tasks (repeat; leakage)"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `steering` section)"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/steering/{model}/{name}/{method}.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/steering/{model}/{name}/{method}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/steering/{model}/{name}/{method}.png"
    ),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """Steer a circuit's neurons on the test split: dose-response, side effects, random controls."""
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.steering.settings import SteeringConfig
    from circuitlab.steering.stages import neuron_steering
    from circuitlab.tasks import get_family
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    cfg = parse_params(SteeringConfig, params)
    model_name, name = job_names(data, model_name, task)
    circ = NeuronCircuit.load(circuit_input(circuit))
    test = load_rows(data, rule="check_dataset", split="test")
    train = load_rows(data, rule="check_dataset", split="train")  # the gradient's support signs
    other = _test_sets(others, name)
    lm = load_stage_model(model, device, backend)
    is_behaviour = get_family(name).kind == "behaviour"
    report = neuron_steering(
        lm, circ, test, other, cfg, name=name, is_behaviour=is_behaviour, train=train
    )
    report["model"] = model_name
    run = f"{model_name}/{name}/{circ.method}"
    _write_steering(report, out, metrics, plot, "steering", run, cfg)


@app.command()
def caa(
    model: Path = model_option(),
    device: str | None = device_option(),
    backend: str | None = backend_option(),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `caa` section)"),
    steering_params: str = typer.Option(
        "{}", "--steering", help=PARAMS_HELP + " (the `steering` section: neutral prompts)"
    ),
    seed: int = typer.Option(0, help="validation split seed"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/caa/{model}/{behaviour}.safetensors"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/caa/{model}/{behaviour}.json"
    ),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """CAA vectors of a behaviour's train split; layer and multiplier chosen on a validation part."""
    from circuitlab import tracking
    from circuitlab.steering.artifact import CaaSelection
    from circuitlab.steering.caa import save_vectors
    from circuitlab.steering.settings import CaaConfig, SteeringConfig
    from circuitlab.steering.stages import build_caa
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    cfg = parse_params(CaaConfig, params)
    scfg = parse_params(SteeringConfig, steering_params, "--steering")
    model_name, name = job_names(data, model_name, task)
    train = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model, device, backend)
    vectors, meta, selection = build_caa(lm, train, cfg, scfg, name=name, seed=seed)
    save_vectors(out, vectors, {**meta, "model": model_name})
    tracking.log_metrics(
        "caa",
        selection,
        metrics,
        config={"caa": cfg.model_dump(mode="json"), "seed": seed},
        run_name=f"caa/{model_name}/{name}",
        schema=CaaSelection,
    )


@app.command("caa-steering")
def caa_steering(
    model: Path = model_option(),
    device: str | None = device_option(),
    backend: str | None = backend_option(),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    vectors: Path = typer.Option(
        ..., callback=CAA_IN, help="data/caa/{model}/{behaviour}.safetensors"
    ),
    others: list[Path] = typer.Option(
        None, help="data/datasets/{model}/{task}.jsonl of the tasks (repeat; leakage)"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `caa` section)"),
    steering_params: str = typer.Option(
        "{}", "--steering", help=PARAMS_HELP + " (the `steering` section)"
    ),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/steering/{model}/{behaviour}/caa.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/steering/{model}/{behaviour}/caa.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/steering/{model}/{behaviour}/caa.png"
    ),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """The chosen CAA vector on the test split: dose-response, side effects, random vectors."""
    from circuitlab.steering.caa import load_vectors
    from circuitlab.steering.settings import CaaConfig, SteeringConfig
    from circuitlab.steering.stages import caa_steering as run_caa
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    cfg = parse_params(CaaConfig, params)
    scfg = parse_params(SteeringConfig, steering_params, "--steering")
    model_name, name = job_names(data, model_name, task)
    tensors, meta = load_vectors(vectors)
    test = load_rows(data, rule="check_dataset", split="test")
    other = _test_sets(others, name)
    lm = load_stage_model(model, device, backend)
    report = run_caa(lm, tensors, meta, test, other, cfg, scfg, name=name)
    report["model"] = model_name
    run = f"{model_name}/{name}/caa"
    config = {"caa": cfg.model_dump(mode="json"), "steering": scfg.model_dump(mode="json")}
    _write_steering(report, out, metrics, plot, "caa_steering", run, config)


@app.command("steering-summary")
def steering_summary(
    reports: list[Path] = typer.Option(
        ..., help="data/steering/{model}/{name}/{method}.json (repeat per report)"
    ),
    model_name: str = model_name_option(),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/steering/{model}/summary.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/steering/{model}/leakage.png"
    ),
) -> None:
    """One model's task × task leakage matrix and steering-vs-control verdicts."""
    from circuitlab import tracking
    from circuitlab.io import read_json, require
    from circuitlab.report.plots import steering_leakage
    from circuitlab.steering.artifact import SteeringSummary
    from circuitlab.steering.stages import leakage_matrix

    loaded = [read_json(require(p, "steering")) for p in reports]
    summary = leakage_matrix(loaded)
    model_name = model_name or reports[0].parent.parent.name
    steering_leakage(summary, plot, f"{model_name}: steering leakage (test split)")
    tracking.log_metrics(
        "steering_summary",
        summary,
        metrics,
        run_name=f"steering_summary/{model_name}",
        schema=SteeringSummary,
    )


@app.command("diagnose-amplification")
def diagnose_amplification(
    data: Path = typer.Option(Path("data"), help="a completed run's data folder"),
    model_name: str = typer.Option("toy", "--model-name", help="the model of the run"),
    device: str | None = device_option(),
    tasks: list[str] = typer.Option(None, "--task", help="tasks/behaviours (repeat; default all)"),
    multipliers: str = typer.Option("1.5,2,4", help="amplifying multipliers (> 1)"),
    out: Path = typer.Option(..., callback=output_path, help="JSON: every variant's numbers"),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """Why amplifying a circuit fails or works: every circuit neuron vs its supporters (by the
    gradient or the stored sign), all positions vs the circuit's, and the residual norm —
    each beside matched random neurons (`circuitlab.steering.diagnose`)."""
    from circuitlab.io import require, write_json
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.steering.diagnose import VARIANTS, amplification_diagnosis
    from circuitlab.steering.neurons import parse_multipliers
    from circuitlab.steering.settings import SteeringConfig
    from circuitlab.tasks import get_family
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    mults = parse_multipliers(multipliers)
    lm = load_stage_model(data / "models" / model_name, device)
    names = tasks or sorted(p.name for p in (data / "circuits" / model_name).iterdir())
    results = []
    for name in names:
        rows = data / "datasets" / model_name / f"{name}.jsonl"
        behaviour = get_family(name).kind == "behaviour"
        for method in ("lrp", "contrastive") if behaviour else ("lrp",):
            circuit = NeuronCircuit.load(require(data / "circuits" / model_name / name /
                                                 f"{method}.json"))  # fmt: skip
            res = amplification_diagnosis(
                lm, circuit, load_rows(rows, split="train"), load_rows(rows, split="test"),
                SteeringConfig().neutral_prompts, is_behaviour=behaviour, multipliers=mults,
            )  # fmt: skip
            results.append(res)
            cells = []
            for v in VARIANTS:
                var = res["variants"][v]
                if var is None:
                    cells.append(f"{v}: none")
                    continue
                best = max(var["multipliers"].items(), key=lambda kv: kv[1]["beyond_control"])
                cells.append(
                    f"{v} ({var['n_neurons']}): {best[1]['beyond_control']:+.3g} at {best[0]}"
                )
            agree = res["sign_agreement"]
            agree_text = "—" if agree is None else f"{agree:.0%}"
            typer.echo(f"{name}/{method} (unsteered {res['unsteered']:.3g}, sign agreement "
                       f"{agree_text}): " + "; ".join(cells))  # fmt: skip
    write_json(out, {"model": model_name, "multipliers": mults, "results": results})
