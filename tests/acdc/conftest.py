"""Fixtures: tiny models (built once per session per architecture) and prepared batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from acdc_support import batch_of, pair_rows

from circuitlab.acdc import Ablation, PatchContext, PatchModel, patchable, prepare
from circuitlab.models import LoadedModel
from circuitlab.types import TaskRow
from tiny_models import build_tiny


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LoadedModel]:
    """`tiny(arch)`: the tiny model of `arch`, built once per session."""
    cache: dict[str, LoadedModel] = {}

    def get(arch: str) -> LoadedModel:
        if arch not in cache:
            cache[arch] = build_tiny(arch, Path(tmp_path_factory.mktemp(arch)))
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def make_ctx(
    tiny: Callable[[str], LoadedModel],
) -> Callable[..., tuple[PatchModel, PatchContext]]:
    """`make_ctx(arch, ablation, rows=None)` → (patch model, prepared context)."""

    def make(
        arch: str, ablation: Ablation = "resample", rows: list[TaskRow] | None = None
    ) -> tuple[PatchModel, PatchContext]:
        lm = tiny(arch)
        pm = patchable(lm)
        return pm, prepare(pm, batch_of(lm, rows or pair_rows()), ablation)

    return make
