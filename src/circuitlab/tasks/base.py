"""Task rows, task families and their registry.

A *task family* builds contrastive prompt rows deterministically from a seed, and writes the
sentences the toy model's corpus is made of (every fact a task asks about appears there).
Families are registered in one place (`REGISTRY`) by the `register` decorator in their own
module; the config schema, the CLI and the Snakefile all read the registry.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from circuitlab.errors import ConfigError, DatasetError
from circuitlab.types import Kind, StrictModel, TaskRow
from circuitlab.validation import parse_model


class TaskParams(StrictModel):
    """Parameters every family takes; families subclass this to add their own."""

    n_train: int = Field(default=64, ge=1, description="rows in the train (discovery) split")
    n_test: int = Field(default=64, ge=1, description="rows in the test (evaluation) split")
    test_fraction: float = Field(
        default=0.3, gt=0.0, lt=1.0, description="share of entities reserved for the test split"
    )

    @field_validator("n_train", "n_test")
    @classmethod
    def _not_huge(cls, v: int) -> int:
        if v > 100_000:
            raise ValueError("more than 100000 rows per split is not supported")
        return v


BuildFn = Callable[[Any, int], list[TaskRow]]
CorpusFn = Callable[[Any, np.random.Generator, int], list[str]]


@dataclass(frozen=True)
class TaskFamily:
    """A registered family: `build(params, seed)` → rows, `corpus(params, rng, n)` → sentences."""

    name: str
    kind: Kind
    params: type[TaskParams]
    build: BuildFn
    corpus: CorpusFn
    description: str

    kinds: ClassVar[tuple[str, ...]] = ("task", "behaviour")


REGISTRY: dict[str, TaskFamily] = {}


def register(
    name: str, *, kind: Kind, params: type[TaskParams], corpus: CorpusFn, description: str
) -> Callable[[BuildFn], BuildFn]:
    """Decorator on a family's `build` function; registers it under `name`."""

    def deco(build: BuildFn) -> BuildFn:
        if name in REGISTRY:
            raise RuntimeError(f"task family {name!r} registered twice")
        REGISTRY[name] = TaskFamily(name, kind, params, build, corpus, description)
        return build

    return deco


def get_family(name: str) -> TaskFamily:
    if name not in REGISTRY:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def families(kind: Kind | None = None) -> list[TaskFamily]:
    return [f for f in REGISTRY.values() if kind is None or f.kind == kind]


def build_rows(name: str, params: TaskParams | dict[str, Any] | None, seed: int) -> list[TaskRow]:
    """Build and validate a family's rows: ids unique, splits non-empty."""
    family = get_family(name)
    p = family_params(family, params)
    rows = family.build(p, seed)
    check_rows(rows, name)
    return rows


def family_params(family: TaskFamily, params: TaskParams | dict[str, Any] | None) -> TaskParams:
    """`params` validated as the family's params model (None → defaults)."""
    if isinstance(params, family.params):
        return params
    return parse_model(family.params, params or {}, f"tasks.{family.name}")


def check_rows(rows: Sequence[TaskRow], task: str) -> None:
    """Model-independent checks: unique ids, both splits present."""
    ids = [r.id for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DatasetError(f"task {task}: duplicate row ids {dupes[:10]}")
    for split in ("train", "test"):
        if not any(r.split == split for r in rows):
            raise DatasetError(f"task {task}: the {split} split is empty")


def parse_rows(raw: Sequence[dict[str, Any]], source: str) -> list[TaskRow]:
    """Validate raw JSON rows; the error lists every bad row (up to 20) by line and reason."""
    rows, bad = [], []
    for n, r in enumerate(raw, start=1):
        try:
            rows.append(TaskRow.model_validate(r))
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            reason = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}"
                for e in exc.errors()  # type: ignore[attr-defined]
            )
            bad.append(f"  row {n} (id={r.get('id', '?')!r}): {reason}")
    if bad:
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DatasetError(f"{source}: {len(bad)} invalid row(s):\n" + "\n".join(bad[:20]) + more)
    return rows


def entity_split(
    entities: Sequence[Any], test_fraction: float, rng: np.random.Generator
) -> tuple[list[Any], list[Any]]:
    """Shuffle `entities` and split them so train and test never share one."""
    if len(entities) < 2:
        raise ConfigError("an entity split needs at least two entities")
    order = rng.permutation(len(entities))
    n_test = min(len(entities) - 1, max(1, round(len(entities) * test_fraction)))
    test = [entities[i] for i in order[:n_test]]
    train = [entities[i] for i in order[n_test:]]
    return train, test


#: The fields of one row a family writes (a `TaskRow` without ``id`` and ``split``).
RowFields = dict[str, Any]
#: A family's rows of one split: ``(split, entity pool, n, rng)`` -> ``n`` rows' fields.
SplitRows = Callable[[str, Sequence[Any], int, np.random.Generator], Iterable[RowFields]]


def split_rows(
    name: str,
    entities: Sequence[Any],
    params: TaskParams,
    seed: int,
    rows_of: SplitRows,
    *,
    need: int = 1,
    what: str = "entities",
) -> list[TaskRow]:
    """The train/test protocol every family shares: ``entities`` are split so train and test
    never share one (`entity_split`, stream 0); each split draws ``n_train`` / ``n_test`` rows
    from its own pool with its own generator (streams 1 and 2, so changing ``n_test`` leaves
    the train rows as they were); rows are numbered ``{name}-{split}-{i:04d}``. A pool smaller
    than ``need`` ``what`` is a ConfigError naming the split."""
    train, test = entity_split(entities, params.test_fraction, family_rng(name, seed, 0))
    rows: list[TaskRow] = []
    for split, pool, n, stream in (
        ("train", train, params.n_train, 1),
        ("test", test, params.n_test, 2),
    ):
        check_pool(name, split, pool, need, what)
        rng = family_rng(name, seed, stream)
        for i, fields in enumerate(rows_of(split, pool, n, rng)):
            rows.append(TaskRow(id=f"{name}-{split}-{i:04d}", split=split, **fields))
    return rows


def family_rng(name: str, seed: int, stream: int = 0) -> np.random.Generator:
    """The generator of one family, seed and stream (0 entity split, 1 train rows, 2 test rows).

    Separate streams keep the train rows unchanged when only `n_test` changes.
    """
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


def take_cycled(items: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    """`n` items: whole shuffled passes over `items` (each used once per pass), then a part."""
    if not items:
        raise ConfigError("nothing to sample from: the entity pool is empty")
    out: list[Any] = []
    while len(out) < n:
        out.extend(items[i] for i in rng.permutation(len(items))[: n - len(out)])
    return out


def check_pool(task: str, split: str, pool: Sequence[Any], need: int, what: str) -> None:
    """Raise a ConfigError when a split's entity pool is too small to build a row from."""
    if len(pool) < need:
        raise ConfigError(
            f"task {task}: the {split} split has {len(pool)} {what}, a row needs {need}; "
            f"move `test_fraction` towards 0.5"
        )
