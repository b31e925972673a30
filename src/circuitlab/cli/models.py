"""The model rules (`workflow/rules/models.smk`): train the toy model, write a hub model's
reference, build a random model of a published shape, evaluate a model on its tasks."""

from __future__ import annotations

from pathlib import Path

import typer

from circuitlab.cli.app import (
    CHECKED_ROWS_IN,
    PARAMS_HELP,
    app,
    backend_option,
    device_option,
    load_stage_model,
    model_name_option,
    model_option,
    output_dir,
    output_path,
    parse_json_option,
    parse_params,
    task_option,
)


@app.command("train-toy-model")
def train_toy_model(
    params: str = typer.Option(..., help=PARAMS_HELP + " (the model's entry, source: toy)"),
    tasks: str = typer.Option(..., help="JSON object: family name -> its corpus params"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(
        ..., callback=output_dir, help="data/models/{model} (a save_pretrained directory)"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/train_toy_model/{model}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/train_toy_model/{model}.json (loss curve)"
    ),
    name: str = typer.Option("toy", help="the model's name in the config"),
    threads: int | None = typer.Option(
        None,
        min=1,
        help="torch threads when the config's training.threads is null (the rule "
        "passes the job's cores); the weights do not depend on it",
    ),
) -> None:
    """Train the embedded default model on the task corpus and save it with save_pretrained."""
    from circuitlab import tracking
    from circuitlab.io import atomic_path
    from circuitlab.models.metrics import TrainingMetrics
    from circuitlab.models.toy import build_toy_model
    from circuitlab.models.toy.settings import ToyModelConfig

    cfg = parse_params(ToyModelConfig, params)
    model, tokenizer, result = build_toy_model(
        cfg, parse_json_option(tasks, "--tasks"), seed, threads=threads
    )
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    tracking.log_metrics(
        "train_toy_model",
        {
            "final_loss": result.losses[-1],
            "train_seconds": round(result.seconds, 3),
            "corpus_sentences": result.n_sequences,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
        },
        metrics,
        config=cfg.model_dump(mode="json") | {"seed": seed},
        series={"loss": result.losses},
        steps=result.loss_steps,
        plots_out=plot,
        run_name=f"train_toy_model/{name}",
        schema=TrainingMetrics,
    )


@app.command("model-ref")
def model_ref(
    params: str = typer.Option(..., help=PARAMS_HELP + " (the model's entry, source: hf)"),
    out: Path = typer.Option(..., callback=output_path, help="data/models/{model}.json"),
) -> None:
    """Record a hub model reference (id, revision, dtype, device) for the later stages."""
    from circuitlab.models.settings import HubModelConfig
    from circuitlab.models.spec import ModelSpec

    cfg = parse_params(HubModelConfig, params)
    ModelSpec(**cfg.model_dump(exclude={"source"})).to_reference(out)


@app.command("random-model")
def random_model(
    params: str = typer.Option(..., help=PARAMS_HELP + " (the model's entry, source: random)"),
    tasks: str = typer.Option(..., help="JSON object: family name -> its corpus params"),
    shape: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="config/shapes/{shape}.json (an HF config.json)"
    ),
    out: Path = typer.Option(
        ..., callback=output_dir, help="data/models/{model} (a save_pretrained directory)"
    ),
    ref: Path = typer.Option(
        ..., callback=output_path, help="data/models/{model}.json (the stages' model reference)"
    ),
) -> None:
    """Build a randomly initialised model of a published shape with the task corpus's
    tokenizer, save it, and write the reference every stage loads it through (as a hub model)."""
    from circuitlab.io import atomic_path
    from circuitlab.models.random import build_random_model, read_shape
    from circuitlab.models.settings import RandomModelConfig
    from circuitlab.models.spec import ModelSpec

    cfg = parse_params(RandomModelConfig, params)
    with atomic_path(out) as tmp:
        build_random_model(cfg, read_shape(shape), parse_json_option(tasks, "--tasks"), tmp)
    ModelSpec(id=str(out), dtype=cfg.dtype, device=cfg.device).to_reference(ref)


@app.command("evaluate-model")
def evaluate_model(
    model: Path = model_option(),
    device: str | None = device_option(),
    backend: str | None = backend_option(),
    data: Path = typer.Option(
        ..., callback=CHECKED_ROWS_IN, help="data/datasets/{model}/{task}.jsonl"
    ),
    batch_size: int = typer.Option(64, min=1),
    min_accuracy: float = typer.Option(0.9, min=0.0, max=1.0),
    model_name: str = model_name_option(),
    task: str = task_option(),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/evaluate_model/{model}/{task}.json"
    ),
) -> None:
    """Top-1 accuracy and logit difference on a task's test split (and train split, for contrast)."""
    from circuitlab import tracking
    from circuitlab.models.evaluate import accuracy_gate, evaluate_task
    from circuitlab.models.metrics import EvaluationMetrics
    from circuitlab.tasks.io import load_rows

    rows = load_rows(data, rule="check_dataset")
    loaded = load_stage_model(model, device, backend)
    name, task = model_name or model.stem, task or data.stem
    scores = evaluate_task(loaded.model, loaded.tokenizer, rows, batch_size)
    tracking.log_metrics(
        "evaluate_model",
        scores,
        out,
        config={"model": str(model), "task": task, "batch_size": batch_size},
        run_name=f"evaluate_model/{name}/{task}",
        schema=EvaluationMetrics,
    )
    accuracy_gate(scores, min_accuracy, model_name=name, task=task)
