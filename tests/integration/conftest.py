"""The one completed tiny pipeline run shared by the integration, rerun and hardening tests.

It runs with the network guard armed in every process (tests/hardening/netguard), so the
offline test can check afterwards that no stage tried to reach the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline_support import make_workdir, network_guard, snakemake, snakemake_env


@dataclass(frozen=True)
class PipelineRun:
    work: Path
    guard_log: Path
    trace: Path  # one JSON per CLI process: its argv and the package modules it loaded
    proxy_hits: list[str]
    n_wandb_runs: int  # W&B runs the initial run logged: one per job


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    work = make_workdir(tmp_path_factory.mktemp("pipeline"))
    log = tmp_path_factory.mktemp("netguard") / "events.jsonl"
    trace = tmp_path_factory.mktemp("modules")
    with network_guard(log) as (guard_env, hits):
        env = snakemake_env(work, **guard_env, CIRCUITLAB_TRACE_MODULES=str(trace))
        # the defaults, not the test harness's settings: no HF offline flag, W&B's default mode
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_MODE"):
            env.pop(key, None)
        snakemake(work, env=env)
        recorded = list(hits)
    runs = len(list((work / "logs" / "wandb").glob("offline-run-*")))
    return PipelineRun(
        work=work, guard_log=log, trace=trace, proxy_hits=recorded, n_wandb_runs=runs
    )


@pytest.fixture(scope="session")
def pipeline(pipeline_run: PipelineRun) -> Path:
    return pipeline_run.work
