"""The datasets rules (`workflow/rules/datasets.smk`): build a task's rows; check them against a
model's tokenizer."""

from __future__ import annotations

from pathlib import Path

import typer

from circuitlab.cli.app import (
    PARAMS_HELP,
    ROWS_IN,
    app,
    model_input,
    model_name_option,
    model_option,
    output_path,
    parse_params,
    task_option,
)
from circuitlab.errors import ConfigError


@app.command()
def datasets(
    task: str = typer.Option(..., help="a registered task or behaviour family"),
    params: str = typer.Option("{}", help=PARAMS_HELP),
    seed: int = typer.Option(0, help="dataset seed"),
    out: Path = typer.Option(..., callback=output_path, help="data/datasets/{task}.jsonl"),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/datasets/{task}.json"
    ),
) -> None:
    """Build one task family's rows (train and test splits, disjoint by entity)."""
    from circuitlab import tracking
    from circuitlab.io import write_jsonl
    from circuitlab.tasks import build_rows, get_family
    from circuitlab.tasks.metrics import DatasetMetrics

    family = get_family(task)
    p = parse_params(family.params, params)
    rows = build_rows(task, p, seed)
    write_jsonl(out, (r.model_dump() for r in rows))
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "test")}
    tracking.log_metrics(
        "datasets",
        {"n_rows": len(rows), "n_train": counts["train"], "n_test": counts["test"]},
        metrics,
        config={"task": task, "seed": seed, **p.model_dump()},
        run_name=f"datasets/{task}",
        schema=DatasetMetrics,
    )


@app.command("check-dataset")
def check_dataset(
    model: Path = model_option(),
    data: Path = typer.Option(..., callback=ROWS_IN, help="data/datasets/{task}.jsonl"),
    on_invalid: str = typer.Option("fail", help="fail | drop"),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ...,
        callback=output_path,
        help="data/datasets/{model}/{task}.jsonl (rows valid for the model)",
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/check_dataset/{model}/{task}.json"
    ),
) -> None:
    """Check a dataset against a model's tokenizer: equal clean/corrupt lengths, 1-token targets."""
    from circuitlab import tracking
    from circuitlab.io import write_jsonl
    from circuitlab.models.loading import load_tokenizer
    from circuitlab.tasks import check_for_tokenizer
    from circuitlab.tasks.io import load_rows
    from circuitlab.tasks.metrics import TokenCheckMetrics

    if on_invalid not in ("fail", "drop"):
        raise ConfigError(f"--on-invalid must be 'fail' or 'drop', got {on_invalid!r}")
    rows = load_rows(data, rule="datasets")
    tokenizer = load_tokenizer(model_input(model))
    name, task = model_name or model.stem, task or data.stem
    kept, report = check_for_tokenizer(rows, tokenizer, task=task, on_invalid=on_invalid)  # type: ignore[arg-type]
    write_jsonl(out, (r.model_dump() for r in kept))
    tracking.log_metrics(
        "check_dataset",
        report.model_dump(mode="json"),
        metrics,
        config={"task": task, "model": str(model), "on_invalid": on_invalid},
        run_name=f"check_dataset/{name}/{task}",
        schema=TokenCheckMetrics,
    )
