"""The one door for metrics: every number a stage produces goes through `log_metrics` once.

It is written to the stage's metrics JSON (the file DVC reads; sorted keys, no timestamps, so
the same numbers give the same bytes), optionally a per-step series to a DVC-plots file, and
logged to one Weights & Biases run.

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
  which is git-ignored; sync them later with ``wandb sync logs/wandb/offline-run-*``.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import itertools
import json
import math
import netrc
import numbers
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from circuitlab.errors import ArtifactError, CircuitlabError, ConfigError
from circuitlab.io import read_json, write_json, write_text_atomic

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "TrackingWarning",
    "log_metrics",
    "project_root",
    "read_metrics",
    "read_provenance",
    "resolve_mode",
    "run_group",
]

Mode = Literal["online", "offline", "disabled"]

ENV_PROJECT = "CIRCUITLAB_WANDB_PROJECT"
ENV_GROUP = "CIRCUITLAB_RUN_GROUP"
ENV_RULE = "CIRCUITLAB_RULE"
ENV_ROOT = "CIRCUITLAB_ROOT"
DEFAULT_PROJECT = "circuitlab"
STEP_KEY = "step"
#: every metrics file's record of what made it (`circuitlab.provenance.job_record`); it is in
#: the W&B run's config, not its summary
PROVENANCE_KEY = "provenance"
PLOT_SUFFIXES = (".json", ".csv", ".tsv")

_MODES: dict[str, Mode] = {
    "offline": "offline",
    "dryrun": "offline",
    "online": "online",
    "run": "online",
    "disabled": "disabled",
}
_MAX_TAG_LEN = 64  # W&B rejects longer tags
_process_group: str | None = None


class TrackingWarning(UserWarning):
    """W&B could not be used as asked (e.g. online without an API key) and fell back."""


# --------------------------------------------------------------------------- public API


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

    Returns:
        The metrics as written to `out` (plain Python values, non-finite numbers as None).

    Raises:
        CircuitlabError: a metric, series or config value that cannot be represented, with the
            key that holds it; or W&B failing in offline mode.
    """
    if not isinstance(stage, str) or not stage:
        raise CircuitlabError(f"stage must be a non-empty string, got {stage!r}")
    clean = _clean_metrics(stage, metrics)
    if PROVENANCE_KEY in clean:
        raise CircuitlabError(f"stage {stage!r}: {PROVENANCE_KEY!r} is reserved for the record")
    flat = _flatten(stage, clean)
    clean_series = _clean_series(stage, series) if series is not None else None
    if plots_out is not None and not clean_series:
        raise CircuitlabError(f"stage {stage!r}: plots_out={plots_out} was given without series")
    if plots_out is not None and Path(plots_out).suffix.lower() not in PLOT_SUFFIXES:
        raise CircuitlabError(
            f"stage {stage!r}: plots_out {plots_out} must end in one of {', '.join(PLOT_SUFFIXES)}"
        )
    if clean_series:
        clash = sorted(set(clean_series) & set(flat))
        if clash:
            raise CircuitlabError(
                f"stage {stage!r}: {clash} is both a metric and a series; the series' last value "
                "would overwrite the metric in the W&B summary. Rename one of them."
            )
    x = _clean_steps(stage, steps, clean_series)
    run_config = _jsonable_config(stage, config)
    run_tags = _clean_tags(stage, tags)
    mode = resolve_mode()  # before any write: a bad WANDB_MODE fails without side effects

    from circuitlab.provenance import job_record

    provenance = job_record()
    write_json(out, {**clean, PROVENANCE_KEY: provenance})
    if plots_out is not None and clean_series:
        _write_plot(Path(plots_out), clean_series, x)

    if mode != "disabled":
        _log_to_wandb(
            mode=mode,
            stage=stage,
            run_name=run_name,
            config={**run_config, PROVENANCE_KEY: provenance},
            tags=run_tags,
            summary=flat,
            series=clean_series or {},
            steps=x,
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


def resolve_mode() -> Mode:
    """The W&B mode this process will use: ``WANDB_MODE`` (default offline), made safe.

    ``online`` without credentials becomes ``offline`` with a `TrackingWarning`.
    """
    raw = os.environ.get("WANDB_MODE", "").strip().lower()
    if not raw:
        mode: Mode = "disabled" if _truthy(os.environ.get("WANDB_DISABLED")) else "offline"
        return mode
    if raw not in _MODES:
        raise ConfigError(
            f"WANDB_MODE={raw!r} is not supported: use 'offline' (default), 'online' or 'disabled'"
        )
    mode = _MODES[raw]
    if mode == "online" and not _has_wandb_credentials():
        warnings.warn(
            "WANDB_MODE=online but no W&B API key was found (WANDB_API_KEY, "
            "WANDB_IDENTITY_TOKEN_FILE or ~/.netrc); logging offline instead. Sync later with "
            "`wandb sync logs/wandb/offline-run-*`.",
            TrackingWarning,
            stacklevel=3,
        )
        mode = "offline"
    return mode


def run_group() -> str:
    """The W&B group: ``CIRCUITLAB_RUN_GROUP``, else one generated name for this process."""
    global _process_group
    group = os.environ.get(ENV_GROUP, "").strip()
    if group:
        return group
    if _process_group is None:
        _process_group = f"adhoc-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    return _process_group


# --------------------------------------------------------------------------- validation


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (type {type(value).__module__}.{type(value).__qualname__})"


def _scalar(value: Any) -> Any:
    """A 0-d numpy/torch value as a Python scalar; anything else unchanged."""
    if not isinstance(value, (str, bytes)) and getattr(value, "ndim", None) == 0:
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    return value


def _number(value: Any) -> int | float | None:
    """A JSON number, or None for NaN/inf; raises TypeError for non-numbers."""
    value = _scalar(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    raise TypeError


def _clean_metrics(stage: str, metrics: Any, prefix: str = "") -> dict[str, Any]:
    where = f"metric {prefix!r}" if prefix else "metrics"
    if not isinstance(metrics, Mapping):
        raise CircuitlabError(
            f"stage {stage!r}: {where} must be a mapping of name to value, got {_describe(metrics)}"
        )
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise CircuitlabError(
                f"stage {stage!r}: metric names must be non-empty strings; got {key!r} in {where}"
            )
        path = f"{prefix}/{key}" if prefix else key
        out[key] = _clean_value(stage, path, value)
    return out


def _clean_value(stage: str, path: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _clean_metrics(stage, value, path)
    try:
        return _number(value)
    except TypeError:
        pass
    hint = " (pass per-step values as series=...)" if _is_sequence(value) else ""
    raise CircuitlabError(
        f"stage {stage!r}: metric {path!r} has value {_describe(value)}; a metric must be a "
        f"number, bool, string, None or a dict of those{hint}"
    )


def _is_sequence(value: Any) -> bool:
    if isinstance(value, (str, bytes, Mapping)):
        return False
    return isinstance(value, Iterable) or getattr(value, "ndim", 0) >= 1


def _flatten(stage: str, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        path = f"{prefix}/{key}" if prefix else key
        items = (
            _flatten(stage, value, path).items() if isinstance(value, Mapping) else [(path, value)]
        )
        for k, v in items:
            if k in flat:
                raise CircuitlabError(
                    f"stage {stage!r}: metric {k!r} appears twice once nested keys are joined "
                    "with '/'; rename one of them"
                )
            flat[k] = v
    return flat


def _clean_series(stage: str, series: Any) -> dict[str, list[int | float | None]]:
    if not isinstance(series, Mapping):
        raise CircuitlabError(
            f"stage {stage!r}: series must be a mapping of name to values, got {_describe(series)}"
        )
    out: dict[str, list[int | float | None]] = {}
    for name, values in series.items():
        if not isinstance(name, str) or not name or name == STEP_KEY:
            raise CircuitlabError(
                f"stage {stage!r}: series names must be non-empty strings other than "
                f"{STEP_KEY!r} (the step column); got {name!r}"
            )
        if hasattr(values, "tolist"):  # numpy array / torch tensor
            values = values.tolist()
        if not _is_sequence(values):
            raise CircuitlabError(
                f"stage {stage!r}: series {name!r} must be a 1-d sequence of numbers, "
                f"got {_describe(values)}"
            )
        clean: list[int | float | None] = []
        for i, v in enumerate(values):
            try:
                clean.append(None if v is None else _number(v))
            except TypeError:
                raise CircuitlabError(
                    f"stage {stage!r}: series {name!r} step {i} has value {_describe(v)}; "
                    "series values must be numbers"
                ) from None
        out[name] = clean
    return out


def _jsonable_config(stage: str, config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump") and not isinstance(config, type):  # pydantic v2
        config = config.model_dump(mode="json")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise CircuitlabError(
            f"stage {stage!r}: config must be a mapping, a pydantic model or a dataclass, "
            f"got {_describe(config)}"
        )
    return _jsonable(stage, config, "")


def _jsonable(stage: str, value: Any, path: str) -> Any:
    value = _scalar(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, enum.Enum):
        return _jsonable(stage, value.value, path)
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return _jsonable(stage, value.model_dump(mode="json"), path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(stage, dataclasses.asdict(value), path)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CircuitlabError(
                    f"stage {stage!r}: config key {k!r} under {path or '<top>'!r} is not a string"
                )
            out[k] = _jsonable(stage, v, f"{path}.{k}" if path else k)
        return out
    if hasattr(value, "tolist"):
        return _jsonable(stage, value.tolist(), path)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(stage, v, f"{path}[{i}]") for i, v in enumerate(items)]
    raise CircuitlabError(
        f"stage {stage!r}: config value {path!r} = {_describe(value)} cannot be logged; "
        "use numbers, strings, bools, lists or dicts"
    )


def _clean_tags(stage: str, tags: Mapping[str, str] | None) -> list[str]:
    if not tags:
        return []
    out = []
    for k, v in tags.items():
        tag = f"{k}={v}"
        if not isinstance(k, str) or not k or len(tag) > _MAX_TAG_LEN:
            raise CircuitlabError(
                f"stage {stage!r}: tag {tag!r} is invalid: keys must be non-empty strings and "
                f"'key=value' at most {_MAX_TAG_LEN} characters"
            )
        out.append(tag)
    return sorted(out)


# --------------------------------------------------------------------------- plots file


def _clean_steps(
    stage: str, steps: Sequence[int] | None, series: Mapping[str, list[Any]] | None
) -> list[int]:
    """The x value of each series entry: `steps` if given (strictly increasing ints), else 0..n-1."""
    n = max((len(v) for v in (series or {}).values()), default=0)
    if steps is None:
        return list(range(n))
    x = [int(s) for s in steps]
    if len(x) != n or any(b <= a for a, b in itertools.pairwise(x)):
        raise CircuitlabError(
            f"stage {stage!r}: steps must be {n} strictly increasing integers (one per series "
            f"entry), got {len(x)}"
        )
    return x


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


# --------------------------------------------------------------------------- W&B


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _has_wandb_credentials() -> bool:
    """Whether wandb would find credentials without prompting (env, identity token, netrc)."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "") or "https://api.wandb.ai").netloc
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else []
    home = Path(os.path.expanduser("~"))
    candidates += [str(home / ".netrc"), str(home / "_netrc")]
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            auth = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if auth and auth[2]:
            return True
    return False


def project_root() -> Path:
    """``CIRCUITLAB_ROOT`` or the working directory; W&B runs go to its ``logs/wandb/``."""
    root = os.environ.get(ENV_ROOT, "").strip()
    return Path(root).resolve() if root else Path.cwd()


def _settings(mode: Mode) -> Any:
    import wandb

    return wandb.Settings(
        mode=mode,
        silent=True,
        console="off",
        save_code=False,
        disable_code=True,
        disable_git=True,
        disable_job_creation=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
        init_timeout=60.0,
    )


def _log_to_wandb(
    *,
    mode: Mode,
    stage: str,
    run_name: str | None,
    config: dict[str, Any],
    tags: list[str],
    summary: dict[str, Any],
    series: Mapping[str, list[int | float | None]],
    steps: Sequence[int],
) -> None:
    # wandb-core reports its own errors to W&B unless told not to; read at service start.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import wandb

    log_dir = project_root() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    init_kwargs: dict[str, Any] = {
        "project": os.environ.get(ENV_PROJECT, "").strip() or DEFAULT_PROJECT,
        "group": run_group(),
        "job_type": os.environ.get(ENV_RULE, "").strip() or stage,
        "name": f"{stage}:{run_name}" if run_name else stage,
        "config": config,
        "tags": tags or None,
        "dir": str(log_dir),
        "reinit": "create_new",
    }
    try:
        run = wandb.init(settings=_settings(mode), **init_kwargs)
    except Exception as exc:
        if mode != "online":
            raise CircuitlabError(
                f"stage {stage!r}: W&B could not start an {mode} run in {log_dir}: {exc}. "
                "Set WANDB_MODE=disabled to skip W&B (the metrics JSON is already written)."
            ) from exc
        warnings.warn(
            f"W&B online run failed to start ({type(exc).__name__}: {exc}); logging offline.",
            TrackingWarning,
            stacklevel=3,
        )
        run = wandb.init(settings=_settings("offline"), **init_kwargs)

    exit_code = 1
    try:
        for i, step in enumerate(steps):
            run.log({n: v[i] for n, v in series.items() if i < len(v)}, step=step)
        if summary:
            run.summary.update(summary)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)
