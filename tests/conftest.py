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
