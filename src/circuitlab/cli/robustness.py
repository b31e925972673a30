"""The seed-robustness rule (`workflow/rules/robustness.smk`, `make robustness`)."""

from __future__ import annotations

from pathlib import Path

import typer

from circuitlab.cli.app import app, model_name_option, output_path
from circuitlab.errors import ConfigError


@app.command()
def robustness(
    seed_models: list[str] = typer.Option(
        ..., "--seed-model", help="SEED=MODEL, one per training seed (repeat)"
    ),
    data: Path = typer.Option(Path("data"), help="the run's data folder"),
    names: list[str] = typer.Option(
        None, "--name", help="the config's tasks and behaviours (repeat; default: every file)"
    ),
    min_accuracy: float = typer.Option(0.9, min=0.0, max=1.0, help="evaluation.min_accuracy"),
    model_name: str = model_name_option(),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/robustness/{model}.json"
    ),
    plot: Path = typer.Option(..., callback=output_path, help="data/plots/robustness/{model}.png"),
) -> None:
    """Every verdict of the report on each training seed of a model, and how many seeds agree."""
    from circuitlab import tracking
    from circuitlab.report.plots import robustness_matrix
    from circuitlab.robustness.artifact import RobustnessSummary
    from circuitlab.robustness.verdicts import agreement, model_verdicts

    models: dict[int, str] = {}
    for item in seed_models:
        seed, sep, name = item.partition("=")
        if not sep or not name or not seed.lstrip("-").isdigit():
            raise ConfigError(f"--seed-model takes SEED=MODEL, got {item!r}")
        models[int(seed)] = name
    per_seed = {s: model_verdicts(data, m, min_accuracy, names or None) for s, m in models.items()}
    agreed = agreement(per_seed)
    seeds = agreed.pop("seeds")  # in the file: the keys of `models` (a metric holds no lists)
    summary = {
        "model": model_name or models[min(models)],
        "models": {str(s): m for s, m in sorted(models.items())},
        "min_accuracy": min_accuracy,
        **agreed,
    }
    robustness_matrix(
        {**summary, "seeds": seeds}, plot, f"{summary['model']}: verdicts over training seeds"
    )
    tracking.log_metrics(
        "robustness",
        summary,
        metrics,
        run_name=f"robustness/{summary['model']}",
        schema=RobustnessSummary,
    )
    typer.echo(
        f"{summary['n_robust']} of {summary['n_verdicts']} verdicts agree on all "
        f"{len(models)} seeds; details: {metrics}"
    )
