"""Lazy re-exports for package ``__init__`` modules.

A package lists what it re-exports in a ``_WHERE`` table (attribute -> defining module) and
imports a module only when one of its names is first used. Importing a submodule
(``circuitlab.acdc.metrics``) then runs no sibling module, which keeps start-up cheap and each
pipeline job's code fingerprint (`circuitlab.provenance.code`, which reads ``_WHERE``) down to
the code the job runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(
    package: str, where: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` re-exporting ``where``."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
