"""The default pipeline opens no network connection (DESIGN principle 6).

The shared session run (tests/integration/conftest.py) runs every process — Snakemake and each
job's `circuitlab` — with the network guard of tests/hardening/netguard armed, without
HF_HUB_OFFLINE and with W&B in its default (offline) mode; any HTTP(S) client outside Python
(W&B's Go service) is pointed at a local recorder as its proxy. Afterwards: no process tried to
connect to or resolve another host, and nothing reached the recorder.
"""

from __future__ import annotations

import pytest

from pipeline_support import guard_events


@pytest.mark.slow
def test_default_pipeline_opens_no_network_connection(pipeline_run) -> None:  # type: ignore[no-untyped-def]
    events = guard_events(pipeline_run.guard_log)
    armed = [e for e in events if e["kind"] == "armed"]
    attempts = [e for e in events if e["kind"] != "armed"]
    # the guard ran in Snakemake and in every job (each job logs a W&B run: one per job)
    n_jobs = pipeline_run.n_wandb_runs
    assert n_jobs >= 20
    assert len({e["pid"] for e in armed}) > n_jobs
    assert attempts == [], attempts
    assert pipeline_run.proxy_hits == [], pipeline_run.proxy_hits
