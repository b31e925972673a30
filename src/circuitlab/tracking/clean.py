"""A stage's metrics, series, steps, config and tags as plain JSON values, or a
CircuitlabError naming the stage and the key that holds a value that cannot be logged."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from circuitlab.errors import CircuitlabError

STEP_KEY = "step"
#: every metrics file's record of what made it (`circuitlab.provenance.job_record`); it is in
#: the W&B run's config, not its summary
PROVENANCE_KEY = "provenance"
_MAX_TAG_LEN = 64  # W&B rejects longer tags


def describe(value: Any) -> str:
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


def clean_metrics(stage: str, metrics: Any, prefix: str = "") -> dict[str, Any]:
    where = f"metric {prefix!r}" if prefix else "metrics"
    if not isinstance(metrics, Mapping):
        raise CircuitlabError(
            f"stage {stage!r}: {where} must be a mapping of name to value, got {describe(metrics)}"
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
        return clean_metrics(stage, value, path)
    try:
        return _number(value)
    except TypeError:
        pass
    hint = " (pass per-step values as series=...)" if _is_sequence(value) else ""
    raise CircuitlabError(
        f"stage {stage!r}: metric {path!r} has value {describe(value)}; a metric must be a "
        f"number, bool, string, None or a dict of those{hint}"
    )


def _is_sequence(value: Any) -> bool:
    if isinstance(value, (str, bytes, Mapping)):
        return False
    return isinstance(value, Iterable) or getattr(value, "ndim", 0) >= 1


def flatten(stage: str, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        path = f"{prefix}/{key}" if prefix else key
        items = (
            flatten(stage, value, path).items() if isinstance(value, Mapping) else [(path, value)]
        )
        for k, v in items:
            if k in flat:
                raise CircuitlabError(
                    f"stage {stage!r}: metric {k!r} appears twice once nested keys are joined "
                    "with '/'; rename one of them"
                )
            flat[k] = v
    return flat


def clean_series(stage: str, series: Any) -> dict[str, list[int | float | None]]:
    if not isinstance(series, Mapping):
        raise CircuitlabError(
            f"stage {stage!r}: series must be a mapping of name to values, got {describe(series)}"
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
                f"got {describe(values)}"
            )
        clean: list[int | float | None] = []
        for i, v in enumerate(values):
            try:
                clean.append(None if v is None else _number(v))
            except TypeError:
                raise CircuitlabError(
                    f"stage {stage!r}: series {name!r} step {i} has value {describe(v)}; "
                    "series values must be numbers"
                ) from None
        out[name] = clean
    return out


def jsonable_config(stage: str, config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump") and not isinstance(config, type):  # pydantic v2
        config = config.model_dump(mode="json")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise CircuitlabError(
            f"stage {stage!r}: config must be a mapping, a pydantic model or a dataclass, "
            f"got {describe(config)}"
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
        f"stage {stage!r}: config value {path!r} = {describe(value)} cannot be logged; "
        "use numbers, strings, bools, lists or dicts"
    )


def clean_tags(stage: str, tags: Mapping[str, str] | None) -> list[str]:
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


def clean_steps(
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
