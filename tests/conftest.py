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


#: Tests that run a Snakemake pipeline, a toy training or the CLI against one: under
#: pytest-xdist they all share one worker, so two pipelines never compete for the two cores
#: (and the shared tiny pipeline run is made once) while the other worker runs the rest.
HEAVY = (
    "tests/integration/",
    "tests/hardening/test_killed_write.py",
    "tests/provenance/test_golden.py",
    "tests/test_readme.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups off the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test TEST_WORKERS=2`, `--dist loadgroup`): every heavy test
    (`HEAVY`, or any that uses the shared pipeline run) in one group, every other module's tests
    together (their module-scoped fixtures are built once)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = item.nodeid.split("::")[0]
        shared = {"pipeline_run", "pipeline"} & set(getattr(item, "fixturenames", ()))
        heavy = shared or path.startswith(HEAVY) or item.get_closest_marker("slow")
        item.add_marker(pytest.mark.xdist_group("heavy" if heavy else path))
