"""The report rules (`workflow/rules/report.smk`): one self-contained HTML page of a run, and
the run's complete record (every metric, the config, the inputs' hashes, the page) in one W&B
run."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from circuitlab.cli.app import (
    app,
    output_path,
    parse_json_option,
)


@app.command()
def report(
    manifest: str = typer.Option(
        ..., help="JSON object: the artifacts to show per model and section (report_manifest())"
    ),
    out: Path = typer.Option(..., callback=output_path, help="data/report/index.html"),
) -> None:
    """The self-contained HTML report of a run (figures inlined, nothing fetched)."""
    from circuitlab.report.manifest import parse_manifest
    from circuitlab.report.render import write_report

    write_report(parse_manifest(parse_json_option(manifest, "--manifest")), out)
    typer.echo(f"wrote {out}")


@app.command()
def record(
    metrics: str = typer.Option(
        ..., help="JSON list: every metrics file of the job graph (the record's contents)"
    ),
    page: Path = typer.Option(..., help="the report page, attached to the W&B run"),
    config: Path = typer.Option(
        ..., help="the run's resolved params file (config/resolved.yaml): the record's config"
    ),
    out: Path = typer.Option(..., callback=output_path, help="data/report/record.json"),
) -> None:
    """The run's complete record: every current metric in one W&B run (job type `record`)
    and in data/report/record.json, with the resolved config, the commit and the md5 of every
    file it summarises; two runs' records compare side by side in W&B."""
    import yaml

    from circuitlab.errors import ConfigError
    from circuitlab.tracking.record import log_record

    try:
        files = json.loads(metrics)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--metrics is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError("--metrics must be a JSON list of paths")
    try:  # not circuitlab.config: its import loads every stage's settings (and fingerprint)
        resolved = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {config} cannot be read: {exc}") from exc
    if not isinstance(resolved, dict):
        raise ConfigError(f"--config {config} must hold the resolved config (a mapping)")
    written = log_record(files, out, config=resolved, attach=[page])
    typer.echo(f"wrote {out}: the metrics of {len(written)} jobs")
