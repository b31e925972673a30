"""The one door for metrics: every number a stage produces goes through `log_metrics` once.

It is written to the stage's metrics JSON (sorted keys, no timestamps, so the same numbers give
the same bytes; the report and RESULTS.md read it), with the stage's headline values beside it
under ``data/summary/`` (the files DVC lists as metrics: `circuitlab.tracking.headline`),
optionally a per-step series to a DVC-plots file, and logged to one Weights & Biases run.

W&B is offline by default and never reaches the network unless asked to:

- mode: ``WANDB_MODE`` (``online`` | ``offline`` | ``disabled``; default ``offline``). ``online``
  without an API key (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a ``.netrc`` entry for
  the W&B host) falls back to offline with a warning, so nothing ever prompts. An online run that
  fails to start also falls back to offline. ``disabled`` writes the files only and does not
  import wandb at all.
- one run per call: ``project`` from ``CIRCUITLAB_WANDB_PROJECT`` (default ``circuitlab``),
  ``group`` from ``CIRCUITLAB_RUN_GROUP`` (the Snakefile sets one per pipeline invocation; else one
  per process), ``job_type`` from ``CIRCUITLAB_RULE`` (else the stage), ``name`` = stage plus the
  caller's ``run_name``, ``config`` = the stage's parameters.
- runs land in ``<root>/logs/wandb/`` (root = ``CIRCUITLAB_ROOT`` or the working directory),
  which is git-ignored and kept by ``make clean-results``; sync them later with
  ``wandb sync logs/wandb/offline-run-*``; ``make snapshot`` copies them into ``data/wandb/``
  (`circuitlab.tracking.wandb_run.keep_runs`). Tests log under a temporary root.
- the pipeline's last job logs the run's complete record (`circuitlab.tracking.record`); `make
  history` reads the snapshots' headline results (`circuitlab.tracking.history`).

The parts: `circuitlab.tracking.clean` turns a stage's values into JSON (or names the key
holding one that cannot be), `circuitlab.tracking.wandb_run` is everything W&B (the mode,
credentials, the run).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuitlab.errors import ArtifactError, CircuitlabError
from circuitlab.io import read_json, write_json, write_text_atomic
from circuitlab.tracking.clean import (
    PROVENANCE_KEY,
    STEP_KEY,
    clean_metrics,
    clean_series,
    clean_steps,
    clean_tags,
    flatten,
    jsonable_config,
)
from circuitlab.tracking.headline import headline, summary_path
from circuitlab.tracking.wandb_run import (
    TrackingWarning,
    log_to_wandb,
    project_root,
    resolve_mode,
    run_group,
)

if TYPE_CHECKING:
    import pydantic

    from circuitlab.artifact import Metrics

__all__ = [
    "PROVENANCE_KEY",
    "TrackingWarning",
    "log_metrics",
    "project_root",
    "read_metrics",
    "read_provenance",
    "resolve_mode",
    "run_group",
]

PLOT_SUFFIXES = (".json", ".csv", ".tsv")


def log_metrics(
    stage: str,
    metrics: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | pydantic.BaseModel | Any | None = None,
    series: Mapping[str, Sequence[float] | Iterable[float]] | None = None,
    plots_out: str | os.PathLike[str] | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    steps: Sequence[int] | None = None,
    schema: type[Metrics] | None = None,
    files: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Write `metrics` to `out` (and `series` to `plots_out`) and log both to one W&B run.

    Args:
        stage: the stage name (``acdc``, ``steering``, …); the W&B job type unless
            ``CIRCUITLAB_RULE`` says otherwise.
        metrics: numbers, bools, strings or None, or nested dicts of those. numpy/torch scalars
            are converted; NaN and ±inf become ``null``. Nested keys are flattened with ``/`` in
            the W&B summary.
        out: the metrics JSON (DVC metrics file), written atomically with sorted keys.
        config: the stage's parameters (a mapping, a pydantic model or a dataclass); W&B config.
        series: per-step values, e.g. ``{"loss": [...]}``; logged with ``step=i``. Series may
            differ in length (a shorter one has null in the plots file at later steps and is
            not logged to W&B there).
        plots_out: where to write `series` for ``dvc plots`` (``.json``: a list of
            ``{"step": i, name: value}`` records; ``.csv``/``.tsv``: a ``step`` column).
        tags: W&B tags, written as ``key=value``.
        run_name: appended to the stage in the W&B run name, e.g. the rule's wildcards.
        steps: the step number of each series entry (default 0, 1, 2, …), e.g. the
            optimiser steps at which a loss was recorded.
        schema: the metrics file's typed model (`circuitlab.artifact.Metrics`), which its
            readers load it through: the metrics must fit it, or nothing is written.
        files: files copied into the W&B run (the report page of the run's record).

    Returns:
        The metrics as written to `out` (plain Python values, non-finite numbers as None).

    Raises:
        CircuitlabError: a metric, series or config value that cannot be represented, with the
            key that holds it; or W&B failing in offline mode.
    """
    if not isinstance(stage, str) or not stage:
        raise CircuitlabError(f"stage must be a non-empty string, got {stage!r}")
    clean = clean_metrics(stage, metrics)
    if PROVENANCE_KEY in clean:
        raise CircuitlabError(f"stage {stage!r}: {PROVENANCE_KEY!r} is reserved for the record")
    if schema is not None:
        schema.check(clean)
    flat = flatten(stage, clean)
    cleaned_series = clean_series(stage, series) if series is not None else None
    if plots_out is not None and not cleaned_series:
        raise CircuitlabError(f"stage {stage!r}: plots_out={plots_out} was given without series")
    if plots_out is not None and Path(plots_out).suffix.lower() not in PLOT_SUFFIXES:
        raise CircuitlabError(
            f"stage {stage!r}: plots_out {plots_out} must end in one of {', '.join(PLOT_SUFFIXES)}"
        )
    if cleaned_series:
        clash = sorted(set(cleaned_series) & set(flat))
        if clash:
            raise CircuitlabError(
                f"stage {stage!r}: {clash} is both a metric and a series; the series' last value "
                "would overwrite the metric in the W&B summary. Rename one of them."
            )
    absent = [str(f) for f in files if not Path(f).is_file()]
    if absent:
        raise CircuitlabError(f"stage {stage!r}: files to attach do not exist: {absent}")
    x = clean_steps(stage, steps, cleaned_series)
    run_config = jsonable_config(stage, config)
    run_tags = clean_tags(stage, tags)
    mode = resolve_mode()  # before any write: a bad WANDB_MODE fails without side effects

    from circuitlab.provenance import job_record

    provenance = job_record()
    write_json(out, {**clean, PROVENANCE_KEY: provenance})
    summary = summary_path(out)
    if summary is not None:  # DVC's view: the stage's headline (tracking.headline)
        write_json(summary, headline(stage, clean))
    if plots_out is not None and cleaned_series:
        _write_plot(Path(plots_out), cleaned_series, x)

    if mode != "disabled":
        log_to_wandb(
            mode=mode,
            stage=stage,
            run_name=run_name,
            config={**run_config, PROVENANCE_KEY: provenance},
            tags=run_tags,
            summary=flat,
            series=cleaned_series or {},
            steps=x,
            files=[Path(f) for f in files],
        )
    return clean


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a metrics JSON written by `log_metrics`: the metrics, without the provenance
    record (`read_provenance`)."""
    data = _read_object(path)
    data.pop(PROVENANCE_KEY, None)
    return data


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a metrics JSON (environment, code digest); {} if it has none."""
    return _read_object(path).get(PROVENANCE_KEY) or {}


def _read_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ArtifactError(
            f"{path} is not a metrics file: expected a JSON object, got {type(data).__name__}"
        )
    return data


def _write_plot(
    path: Path, series: Mapping[str, list[int | float | None]], x: Sequence[int]
) -> None:
    suffix = path.suffix.lower()
    names = sorted(series)
    steps = len(x)
    # Every row has every column (null where a shorter series has ended): `dvc plots` 3.67
    # fails with a TypeError on JSON records whose keys differ from the first record's.
    rows = [
        {STEP_KEY: x[i], **{n: series[n][i] if i < len(series[n]) else None for n in names}}
        for i in range(steps)
    ]
    if suffix == ".json":
        body = ",\n".join("  " + json.dumps(r, sort_keys=True) for r in rows)
        text = f"[\n{body}\n]\n" if rows else "[]\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf,
            fieldnames=[STEP_KEY, *names],
            delimiter="\t" if suffix == ".tsv" else ",",
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
        text = buf.getvalue()
    write_text_atomic(path, text)
