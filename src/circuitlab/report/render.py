"""The self-contained HTML report `data/report/index.html`, in three steps each testable on
its own: `load_report_inputs(manifest)` (`manifest`), `build_view(loaded)` (`view`) and the
jinja2 template shipped in `circuitlab/report/templates/` (here). Figures are drawn with
matplotlib's Agg backend and inlined, CSS is inline: the file opens offline and fetches nothing.
Sections render from whatever the manifest lists; a section the pipeline did not run is simply
absent from it."""

from __future__ import annotations

from pathlib import Path

from circuitlab.report.manifest import LoadedReport, ReportManifest, load_report_inputs
from circuitlab.report.view import build_view


def render_report(loaded: LoadedReport) -> str:
    """Loaded artifacts → one self-contained HTML page (pure: no disk, no network)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("circuitlab.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(**build_view(loaded))


def write_report(manifest: ReportManifest, out: str | Path) -> Path:
    """Load, render, then write atomically: a missing input leaves no file behind."""
    from circuitlab.io import write_text_atomic

    html = render_report(load_report_inputs(manifest))
    return write_text_atomic(out, html)
