"""The warm process (`circuitlab.warm`): a job forked from it ends as its own process would —
same outputs, same exit code, same death by a signal — and no command outlives its job.

The pipeline-level proof is elsewhere: the shared session run's jobs all run warm
(tests/integration/test_provenance.py) and give the same bytes as a run whose jobs each start a
fresh process (tests/integration/test_determinism.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from circuitlab import warm

COMMAND = [sys.executable, "-m", "circuitlab.cli"]
DATASET = ["datasets", "--task", "ioi", "--params", '{"n_train": 6, "n_test": 4}']


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[warm.Server, dict]]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop(warm.ENV, None)
    started = warm.start(env)
    assert started is not None and env[warm.ENV] == started.path
    yield started, env
    started.stop()
    assert started.process.returncode is not None
    assert not Path(started.path).parent.exists(), "the socket's folder is left behind"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def forks(started: warm.Server) -> list[int]:
    """The server's forked jobs, once there is one (a minute at most)."""
    deadline = time.monotonic() + 60
    found: list[int] = []
    while not found and time.monotonic() < deadline:
        found = children(started.process.pid)
        time.sleep(0.1)
    assert found, "the job never reached the server"
    return found


def follow_a_run(folder: Path, env: dict) -> subprocess.Popen[str]:
    """`circuitlab watch` on a run in progress in ``folder``: a job that runs until stopped."""
    log = folder / ".snakemake" / "log" / "2026-12-07T000000.000000.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("Building DAG of jobs...\n")
    return subprocess.Popen([*COMMAND, "watch", "--interval", "0.2"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def test_a_job_runs_in_the_server_and_writes_what_a_fresh_process_writes(
    server: tuple[warm.Server, dict], tmp_path: Path
) -> None:
    _, env = server
    cold_env = {k: v for k, v in env.items() if k != warm.ENV}
    for name, job_env in (("warm", env), ("cold", cold_env)):
        args = [*DATASET, "--out", f"{name}.jsonl", "--metrics", f"{name}.json"]
        proc = subprocess.run([*COMMAND, *args], cwd=tmp_path, env=job_env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "own process" not in proc.stderr  # not refused: it ran in the server
    assert (tmp_path / "warm.jsonl").read_bytes() == (tmp_path / "cold.jsonl").read_bytes()


def test_exit_codes_and_error_messages_come_back(
    server: tuple[warm.Server, dict], tmp_path: Path
) -> None:
    _, env = server
    usage = subprocess.run([*COMMAND, "datasets", "--task", "ioi"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert usage.returncode == 2 and "Missing option '--out'" in usage.stderr
    bad = subprocess.run([*COMMAND, *DATASET[:2], "nope", "--out", "x.jsonl", "--metrics", "x.json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "nope" in bad.stderr
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)],
)
def test_a_signal_to_the_job_ends_its_command(
    server: tuple[warm.Server, dict], tmp_path: Path, sent: int, expected: int
) -> None:
    """SIGTERM and SIGINT are passed on (SIGINT: the command's own "aborted", 130); SIGKILL
    cannot be, and the server kills the command when the job's process is gone."""
    started, env = server
    job = follow_a_run(tmp_path, env)
    forks(started)  # the fork running `watch`
    time.sleep(1.0)
    job.send_signal(sent)
    assert job.wait(timeout=30) == expected
    deadline = time.monotonic() + 10
    while children(started.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children(started.process.pid) == [], "the command outlived its job"


def test_a_job_whose_environment_differs_at_import_runs_in_its_own_process(
    server: tuple[warm.Server, dict], tmp_path: Path
) -> None:
    _, env = server
    job_env = {**env, "MKL_CBWR": "AUTO"}  # read by MKL when it loads: the server has another
    proc = subprocess.run([*COMMAND, *DATASET, "--out", "d.jsonl", "--metrics", "d.json"],
                          cwd=tmp_path, env=job_env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "runs in its own process (environment differs in MKL_CBWR)" in proc.stderr


def test_what_decides_a_refusal() -> None:
    base = {"MKL_CBWR": "AVX2,STRICT", "PATH": "/bin", "PYTHONPATH": "/x"}
    ask = {"executable": sys.executable, "env": {**base, "OMP_NUM_THREADS": "1", "PATH": "/y"}}
    assert warm.refusal(ask, {**base, "OMP_NUM_THREADS": "2"}) is None  # per job / no import
    assert "PYTHONPATH" in warm.refusal({**ask, "env": {**ask["env"], "PYTHONPATH": "/z"}}, base)
    assert "another Python" in warm.refusal({**ask, "executable": "/usr/bin/python0"}, base)
    assert "SLURM_JOB_ID" in warm.refusal(ask, {**base, "SLURM_JOB_ID": "7"})


def test_the_server_ends_with_the_run_that_started_it(tmp_path: Path) -> None:
    """A Snakemake run killed outright leaves no server behind."""
    script = ("import os, sys; from circuitlab import warm; env = dict(os.environ); "
              "env.pop(warm.ENV, None); s = warm.start(env); print(s.process.pid, flush=True)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "WANDB_MODE": "disabled"})  # fmt: skip
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 60
    while command_line(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not command_line(pid) or "circuitlab.warm" not in " ".join(command_line(pid))


def test_no_server_when_turned_off_and_no_delegation_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert warm.start({warm.ENV: "0"}) is None
    for value in ("0", "/nonexistent/socket"):  # off, or a server that is gone: run here
        monkeypatch.setenv(warm.ENV, value)
        assert warm.delegate("circuitlab.cli:main", ["datasets"]) is None


def test_a_forked_job_knows_it_ran_warm(server: tuple[warm.Server, dict], tmp_path: Path) -> None:
    """What the pipeline's module trace reads (`warm.in_warm_process`): true in a forked job,
    false in the job's own process."""
    _, env = server
    trace = tmp_path / "trace"
    for job_env in (env, {k: v for k, v in env.items() if k != warm.ENV}):
        proc = subprocess.run([*COMMAND, "acdc-methods"], cwd=tmp_path, capture_output=True,
                              env={**job_env, "CIRCUITLAB_TRACE_MODULES": str(trace)}, text=True,
                              timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    import json

    ran = sorted(json.loads(p.read_text())["warm"] for p in trace.glob("*.json"))
    assert ran == [False, True]


def test_a_server_that_dies_takes_its_jobs_with_it(tmp_path: Path) -> None:
    """The job's process then fails (its outputs are not trusted), and no command is left to
    write them later."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop(warm.ENV, None)
    started = warm.start(env)
    assert started is not None
    job = follow_a_run(tmp_path, env)
    forked = forks(started)
    started.process.kill()
    started.process.wait()
    assert job.wait(timeout=30) == 1
    assert "the warm process ended" in job.stderr.read()
    deadline = time.monotonic() + 10
    while command_line(forked[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not command_line(forked[0]), "the command outlived its server"
    started.stop()
