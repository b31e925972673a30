"""One complete record per pipeline run: every current metric, the config, the commit, the
inputs' hashes and the report, in one W&B run.

Each job logs its own W&B run into the invocation's group, so a group holds only the jobs that
invocation ran (a 4-job rerun: 4 runs), and the current results are spread over every group
that ever ran. The pipeline's last job (rule ``record``, after the report) logs one more run,
through the metrics door like every stage, that holds all of them: its summary is every
metrics file of the job graph (``<rule>/<wildcards>/<key>`` flattened), its config the
resolved config, the provenance record (commit, dirty flag, environment) and the md5 of every
file it summarises (the hash DVC 3 gives a file), and its files the report page. Filter the
W&B project on job type ``record`` and two invocations compare side by side, however few jobs
the second one ran. The same metrics are written to ``data/report/record.json``, versioned
with the snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from circuitlab.errors import ArtifactError
from circuitlab.io import file_hash

METRICS_ROOT = Path("data/metrics")


def md5(path: str | os.PathLike[str]) -> str:
    """A file's md5, as DVC 3 hashes a file."""
    return file_hash(path, "md5")


def record_key(path: str | os.PathLike[str]) -> str:
    """A metrics file's key in the record: its path under ``data/metrics/`` without
    ``.json`` (``acdc_evaluate/toy/ioi``); a file elsewhere keeps its path."""
    p = Path(path)
    if p.is_relative_to(METRICS_ROOT):
        p = p.relative_to(METRICS_ROOT)
    return p.with_suffix("").as_posix()


def log_record(
    metrics_files: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    attach: Iterable[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Log the run's record (every file of `metrics_files`, read back without provenance) to
    `out` and one W&B run whose config is `config`, the md5 of every summarised file and of
    each attached file, and which carries the `attach` files (the report page)."""
    from circuitlab.tracking import log_metrics, read_metrics

    files = sorted({str(p) for p in metrics_files})
    missing = [p for p in files if not Path(p).is_file()]
    if missing:
        raise ArtifactError(f"the record needs every metrics file; missing: {missing[:5]}")
    metrics = {record_key(p): read_metrics(p) for p in files}
    attached = [str(p) for p in attach]
    inputs = {p: md5(p) for p in [*files, *attached]}
    return log_metrics(
        "record",
        metrics,
        out,
        config={"config": dict(config), "inputs_md5": inputs},
        files=attached,
    )
