"""The report rule (`workflow/rules/report.smk`): one self-contained HTML page of a run."""

from __future__ import annotations

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
