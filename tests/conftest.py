"""Shared fixtures: a tiny pipeline config and the environment every test runs in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitlab.provenance import numerics

# The pipeline's numerics pins, before anything imports torch (ATen and MKL read them once), so
# in-process tests compute what the pipeline's jobs compute.
numerics.apply()

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the network: W&B offline, the HF hub offline."""
    monkeypatch.setenv("WANDB_MODE", os.environ.get("CIRCUITLAB_TEST_WANDB_MODE", "offline"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


#: Tests that run a Snakemake pipeline, a toy training or the CLI against one (every user of
#: the shared pipeline run is under tests/integration/): under pytest-xdist they all run on one
#: worker, so two pipelines never compete for the two cores and the shared run is made once,
#: while the other worker runs the rest.
HEAVY = (
    "tests/integration/",
    "tests/hardening/test_killed_write.py",
    "tests/provenance/test_golden.py",
    "tests/test_readme.py",
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test TEST_WORKERS=2`: xdist's load-by-scope scheduling with the heavy tests as one
    scope and every other module as its own (its module-scoped fixtures are built once).

    Not ``--dist loadgroup`` with ``xdist_group`` marks: pytest-xdist 3.8 groups by appending
    the group to ``item._nodeid``, which pytest 9.2 no longer reads (it keeps ``item._id``), so
    the groups were silently ignored and both workers built the shared pipeline run."""
    from xdist.scheduler import LoadScopeScheduling

    class HeavyApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "heavy" if path.startswith(HEAVY) else path

    return HeavyApart(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: the heavy tests first, so their worker starts the longest chain at
    once (xdist hands out scopes in collection order). One process keeps the usual order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: not item.nodeid.startswith(HEAVY))
