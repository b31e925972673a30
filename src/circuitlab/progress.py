"""Progress of long work: one door, so every stage reports the same way.

Bars write to stderr, which a pipeline job sends to its log; `make watch` (`circuitlab watch`)
shows the last line of each running job's log, one line per job, so bars of parallel jobs never
share a screen. Bars are on unless ``CIRCUITLAB_PROGRESS=0`` (the switch for library users too);
a stage that takes a ``progress`` argument passes it as ``enabled``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

ENV_PROGRESS = "CIRCUITLAB_PROGRESS"


def progress_enabled() -> bool:
    return os.environ.get(ENV_PROGRESS, "1").strip().lower() not in {"0", "false", "no", "off"}


def bar(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    enabled: bool = True,
    **kwargs: Any,
) -> tqdm[T]:
    """A tqdm bar (``desc``, ``unit``) refreshed at most once a second (a log stays small)."""
    return tqdm(
        iterable,
        desc=desc,
        unit=unit,
        total=total,
        disable=not (enabled and progress_enabled()),
        mininterval=1.0,
        dynamic_ncols=True,
        **kwargs,
    )
