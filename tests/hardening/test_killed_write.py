"""A job killed mid-write leaves nothing corrupt, and rerunning it completes (issue 6 §5).

The kill is a real SIGKILL of the `circuitlab` process at a chosen moment (tests/hardening/
killer): half-way through writing an artifact's bytes, or after the artifact is complete in its
temporary place but before the rename. `circuitlab.io.atomic_path` must keep the final path
absent in both cases; the only trace is a hidden temporary folder beside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from circuitlab.models.loading import load_model
from circuitlab.tasks.io import load_rows
from cli_support import run_fresh
from pipeline_support import make_workdir, snakemake, snakemake_env

KILLER = Path(__file__).parent / "killer"
TOY = {
    "source": "toy",
    "architecture": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "d_mlp": 32},
    "training": {"steps": 3, "batch_size": 4, "warmup_steps": 0},
    "corpus": {"sentences_per_family": 5, "filler_sentences": 5},
}


def circuitlab(*args: object, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh process (it may be killed), with the killer on its path when ``kill_at``."""
    env = {}
    if kill_at:
        path = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(KILLER), path) if p)
        env["CIRCUITLAB_KILL_AT"] = kill_at
    return run_fresh(*args, env=env)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_killed_half_way_through_writing_rows_then_rerun(tmp_path: Path) -> None:
    out, metrics = tmp_path / "d" / "ioi.jsonl", tmp_path / "m" / "ioi.json"
    args = ["datasets", "--task", "ioi", "--params", '{"n_train": 20, "n_test": 10}',
            "--out", out, "--metrics", metrics]  # fmt: skip
    proc = circuitlab(*args, kill_at="write:ioi.jsonl")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and not metrics.exists()
    (tmp,) = leftovers(out.parent)  # only a hidden temporary folder, never `ioi.jsonl`
    assert tmp.startswith(".ioi.jsonl.") and tmp.endswith(".tmp")
    partial = (out.parent / tmp / "ioi.jsonl").read_bytes()
    assert partial, "the kill must have happened mid-write"

    proc = circuitlab(*args)
    assert proc.returncode == 0, proc.stderr
    rows = load_rows(out)
    assert len(rows) == 30
    assert len(partial) < len(out.read_bytes())  # the killed write really was half of it
    assert json.loads(metrics.read_text())["n_rows"] == 30  # provenance sits beside it
    assert leftovers(out.parent) == ["ioi.jsonl"]  # the rerun cleared the killed temporary


def test_killed_before_the_model_folder_is_renamed_then_rerun(tmp_path: Path) -> None:
    out = tmp_path / "models" / "toy_under_test"
    args = ["train-toy-model", "--params", json.dumps(TOY), "--tasks", "{}",
            "--out", out, "--metrics", tmp_path / "m.json", "--plot", tmp_path / "p.json"]  # fmt: skip
    proc = circuitlab(*args, kill_at="replace:toy_under_test")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    (tmp,) = leftovers(out.parent)
    assert tmp.startswith(".toy_under_test.")
    # complete in its temporary place, yet invisible under the final name
    assert (out.parent / tmp / "toy_under_test" / "model.safetensors").exists()

    proc = circuitlab(*args)
    assert proc.returncode == 0, proc.stderr
    lm = load_model(out)
    assert lm.dims.n_layers == 1 and (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_snakemake_job_killed_mid_write_then_rerun_completes(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "work")
    target = "data/datasets/capitals.jsonl"
    killer_env = snakemake_env(
        work,
        PYTHONPATH=os.pathsep.join(p for p in (str(KILLER), os.environ.get("PYTHONPATH")) if p),
        CIRCUITLAB_KILL_AT="write:capitals.jsonl",
        WANDB_MODE="disabled",
    )
    proc = snakemake(work, target, env=killer_env, check=False)
    assert proc.returncode != 0
    assert not (work / target).exists()
    assert not (work / "data/metrics/datasets/capitals.json").exists()

    proc = snakemake(work, target, env=snakemake_env(work, WANDB_MODE="disabled"))
    assert len(load_rows(work / target)) == 14  # 8 train + 6 test rows of the tiny config
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(
        snakemake(work, target, env=snakemake_env(work, WANDB_MODE="disabled"))
    )
