"""`circuitlab watch` (`make watch`): the running pipeline at a glance, one line per job.

Reads what Snakemake already writes — its run log in ``.snakemake/log/`` (which jobs started,
with their log files; which finished or failed) — and each running job's own log, of which it
shows the last line (the current state of a progress bar: a bar redraws with carriage returns).
Parallel jobs never interleave on the screen: every job has its own line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RULE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_ERROR = re.compile(r"^Error in rule (\w+):\s*$")
_FIELD = re.compile(r"^\s+(log|jobid|wildcards): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
_TOTAL = re.compile(r"^total\s+(\d+)\s*$")
_STEPS = re.compile(r"^(\d+) of (\d+) steps \((\d+)%\) done")
_END = ("Complete log", "Nothing to be done", "Exiting because a job execution failed")


@dataclass
class Job:
    rule: str
    log: Path | None = None
    wildcards: str = ""

    @property
    def name(self) -> str:
        """The wildcard values (``model=toy, task=ioi`` → ``toy/ioi``)."""
        return "/".join(p.split("=", 1)[-1] for p in self.wildcards.split(", ") if p)


@dataclass
class RunState:
    """What a Snakemake run log says so far."""

    log: Path
    total: int | None = None
    done: int = 0
    running: dict[int, Job] = field(default_factory=dict)
    failed: dict[int, Job] = field(default_factory=dict)
    ended: bool = False


def latest_run_log(workdir: Path = Path(".")) -> Path | None:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1] if logs else None


def parse_run_log(path: Path) -> RunState:
    """The jobs a Snakemake run log reports as started, finished and failed."""
    state = RunState(path)
    current: Job | None = None
    in_error = False
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = _ANSI.sub("", raw)
        if m := _RULE.match(line):
            current, in_error = Job(m.group(1)), False
        elif m := _ERROR.match(line):
            current, in_error = Job(m.group(1)), True
        elif (m := _FIELD.match(line)) and current is not None:
            key, value = m.groups()
            if key == "log":
                current.log = Path(value.split(" (")[0].split(",")[0].strip())
            elif key == "wildcards":
                current.wildcards = value.strip()
            elif key == "jobid":
                jobid = int(value.strip())
                if in_error:
                    state.running.pop(jobid, None)
                    state.failed[jobid] = current
                else:
                    state.running[jobid] = current
        elif m := _FINISHED.match(line):
            state.running.pop(int(m.group(1)), None)
        elif m := _STEPS.match(line):
            state.done, state.total = int(m.group(1)), int(m.group(2))
        elif (m := _TOTAL.match(line)) and state.total is None:
            state.total = int(m.group(1))
        elif line.startswith(_END):
            state.ended = True
    return state


def last_line(path: Path | None, width: int = 160) -> str:
    """The last visible line of a job log: after the last newline or carriage return."""
    if path is None or not path.exists():
        return "(no log yet)"
    with path.open("rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    pieces = [p.strip() for p in re.split(r"[\r\n]", _ANSI.sub("", tail)) if p.strip()]
    return pieces[-1][:width] if pieces else "(empty log)"


def render(state: RunState, workdir: Path = Path(".")) -> Table:
    done = f"{state.done} of {state.total}" if state.total else f"{state.done}"
    status = "finished" if state.ended and not state.failed else "running"
    if state.failed:
        status = "failed"
    table = Table(title=f"{state.log.name}: {done} jobs done, {status}", title_justify="left")
    table.add_column("job", no_wrap=True, min_width=24)
    table.add_column("now (last line of its log)", overflow="ellipsis", no_wrap=True)
    for _, job in sorted(state.running.items()):
        log = workdir / job.log if job.log is not None else None
        table.add_row(f"{job.rule} {job.name}".strip(), last_line(log))
    for _, job in sorted(state.failed.items()):
        table.add_row(f"[red]{job.rule} {job.name} FAILED[/]", f"see {job.log}")
    if not state.running and not state.failed:
        table.add_row("-", "no job running")
    return table


def watch(
    workdir: Path = Path("."),
    *,
    interval: float = 1.0,
    once: bool = False,
    console: Console | None = None,
    wait: float = 30.0,
) -> RunState | None:
    """Show the latest run until it ends (``once``: one snapshot). None when there is no run.

    Started together with `make reproduce`, the newest log on disk is the previous, finished
    run's (Snakemake parses the workflow before it opens its log): a finished log older than
    this call, or no log while a run holds the lock, is waited on for up to ``wait`` seconds
    for the new run to appear."""
    console = console or Console()
    path = latest_run_log(workdir)
    if not once and _stale(path, workdir, time.time()):
        path = _await_new_log(path, workdir, console, wait=wait, interval=interval)
    if path is None:
        console.print(
            "no Snakemake run found (.snakemake/log/ is empty): start one with `make reproduce`"
        )
        return None
    state = parse_run_log(path)
    if once:
        console.print(render(state, workdir))
        return state
    with Live(render(state, workdir), console=console, refresh_per_second=4) as live:
        while not state.ended:
            time.sleep(interval)
            newest = latest_run_log(workdir) or path
            state = parse_run_log(newest)
            if not state.ended and _abandoned(newest, workdir):
                state.ended = True  # killed, or died before its first job: nothing more comes
            live.update(render(state, workdir))
    return state


def _locked(workdir: Path) -> bool:
    return any((workdir / ".snakemake" / "locks").glob("*.lock"))


def _stale(path: Path | None, workdir: Path, since: float) -> bool:
    """Whether `path` cannot be the run being started: it ended before `since`, or there is no
    log yet while a run holds the lock."""
    if path is None:
        return _locked(workdir)
    return parse_run_log(path).ended and path.stat().st_mtime < since


def _await_new_log(
    path: Path | None, workdir: Path, console: Console, *, wait: float, interval: float
) -> Path | None:
    """The first log newer than `path` to appear within `wait` seconds, else `path`."""
    deadline = time.time() + wait
    with console.status(
        f"waiting up to {wait:.0f} s for a new run (the newest log, "
        f"{path.name if path else 'none yet'}, is of a finished run)"
    ):
        while time.time() < deadline:
            newest = latest_run_log(workdir)
            if newest is not None and newest != path:
                return newest
            time.sleep(min(interval, 0.5))
    return path


def _abandoned(log: Path, workdir: Path, idle_s: float = 10.0) -> bool:
    """The run holds no Snakemake lock and its log has been still for ``idle_s``."""
    return not _locked(workdir) and time.time() - log.stat().st_mtime > idle_s
