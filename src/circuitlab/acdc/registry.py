"""The edge methods: one `EdgeMethod` entry per method, in the method's own file under
`circuitlab.acdc.methods`. No torch here (nor in those files' top levels): the config reads
the entries to build its `acdc` section.

An entry is everything the rest of circuitlab reads about a method:

* ``name`` — the key in ``acdc.methods``, the ``{method}`` of the pipeline's files, the CLI's
  ``--method``;
* ``settings`` — its own sub-config, ``acdc.<name>`` (a `StrictModel`; defaults are the
  defaults); ``shared`` — the section-level ``acdc`` keys it also reads (the τ sweep). A
  discovery job's params are exactly these (`AcdcConfig.discovery_params`), so a key of one
  method reruns that method's jobs only;
* ``run`` — ``(PatchContext, AcdcConfig, settings) -> fields of a CircuitArtifact``; it
  imports what it needs when called, so a job's code fingerprint holds its own method's file
  and what that file imports, and no other method's (`circuitlab.provenance.code`);
* ``kind`` — ``sweep`` (one circuit per τ, scores are prune scores), ``ranking`` (scores rank
  every edge; circuits are top fractions) or ``single`` (one circuit);
* ``summary``, ``score``, ``cost`` — the documentation (`circuitlab acdc-methods`, README's
  table, the config schema);
* ``default`` — whether ``acdc.methods`` lists it when the config does not say; ``order`` —
  where it sits in that list; ``hooks`` — whether it also runs on the TransformerLens
  backend (a config with such a model and a method without it is an error).

Adding a method is one file in `circuitlab/acdc/methods/` with a module-level ``METHOD``, its
test, and (to change the default) the config.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from circuitlab.types import StrictModel

MethodKind = Literal["sweep", "ranking", "single"]
METHODS_PACKAGE = "circuitlab.acdc.methods"


@dataclass(frozen=True)
class EdgeMethod:
    """One edge method (module doc)."""

    name: str
    summary: str
    settings: type[StrictModel]
    run: Callable[..., dict[str, Any]]
    kind: MethodKind
    score: str
    cost: str
    shared: tuple[str, ...] = ()
    default: bool = True
    order: int = 100
    #: whether it runs on the TransformerLens backend's hooks too (`circuitlab.acdc.hooked`)
    hooks: bool = True

    @property
    def module(self) -> str:
        """The method's file as a module name (what its discovery jobs are fingerprinted by)."""
        return f"{METHODS_PACKAGE}.{self.name}"


def load_methods(package: str) -> dict[str, EdgeMethod]:
    """Every ``METHOD`` of the modules in ``package`` (files starting with ``_`` are helpers),
    by name, in ``order``. TypeError for a module without one, or whose entry's name is not
    its file's."""
    pkg = importlib.import_module(package)
    found: list[EdgeMethod] = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        entry = getattr(mod, "METHOD", None)
        if not isinstance(entry, EdgeMethod):
            raise TypeError(f"{mod.__name__} has no module-level METHOD = EdgeMethod(...)")
        if entry.name != info.name:
            raise TypeError(f"{mod.__name__}: METHOD.name {entry.name!r} ≠ its file's name")
        found.append(entry)
    found.sort(key=lambda m: (m.order, m.name))
    return {m.name: m for m in found}


@cache
def _registry() -> dict[str, EdgeMethod]:
    return load_methods(METHODS_PACKAGE)


@cache
def method_files() -> tuple[str, ...]:
    """The registered methods' names, from the file names alone (nothing imported)."""
    pkg = importlib.import_module(METHODS_PACKAGE)
    return tuple(
        sorted(i.name for i in pkgutil.iter_modules(pkg.__path__) if not i.name.startswith("_"))
    )


def edge_methods() -> dict[str, EdgeMethod]:
    """Every registered method by name, in ``order`` (imports every method's file)."""
    return dict(_registry())


def method_names() -> tuple[str, ...]:
    return tuple(_registry())


def default_methods() -> list[str]:
    return [m.name for m in _registry().values() if m.default]


@cache
def get_method(name: str) -> EdgeMethod:
    """The entry of ``name``, importing that method's file only; ConfigError naming the known
    methods for anything else."""
    from circuitlab.errors import ConfigError

    if name not in method_files():
        raise ConfigError(f"unknown edge method {name!r}; choose one of {list(method_names())}")
    mod = importlib.import_module(f"{METHODS_PACKAGE}.{name}")
    entry = getattr(mod, "METHOD", None)
    if not isinstance(entry, EdgeMethod) or entry.name != name:
        raise TypeError(f"{mod.__name__} has no module-level METHOD = EdgeMethod(name={name!r})")
    return entry


def methods_table() -> str:
    """The methods as a Markdown table (README's, `circuitlab acdc-methods`)."""
    lines = [
        "| method | kind | settings (`acdc.<method>.*`) | what it does | score | cost |",
        "|---|---|---|---|---|---|",
    ]
    for m in _registry().values():
        keys = [*m.settings.model_fields, *(f"`acdc.{k}`" for k in m.shared)]
        own = ", ".join(f"`{k}`" if not k.startswith("`") else k for k in keys) or "—"
        mark = "" if m.default else " (opt-in)"
        lines.append(
            f"| `{m.name}`{mark} | {m.kind} | {own} | {m.summary} | {m.score} | {m.cost} |"
        )
    return "\n".join(lines)
