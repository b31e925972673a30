"""`circuitlab watch`: a Snakemake run log read back as jobs done, running (each with the last
line of its own log: the current state of its progress bar) and failed."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from circuitlab.watch import last_line, parse_run_log, watch

RUN_LOG = """\
Building DAG of jobs...
Job stats:
job              count
-------------  -------
acdc_circuit         2
all                  1
total                3

Select jobs to execute...
[Thu Dec  3 02:26:09 2026]
localrule acdc_circuit:
    input: data/models/toy/model.safetensors
    output: data/circuits/toy/ioi/acdc.json
    log: logs/acdc_circuit/toy/ioi/acdc.log
    jobid: 7
    reason: Missing output files
    wildcards: model=toy, task=ioi, method=acdc
    resources: tmpdir=/tmp
[Thu Dec  3 02:26:10 2026]
localrule acdc_circuit:
    output: data/circuits/toy/sva/acdc.json
    log: logs/acdc_circuit/toy/sva/acdc.log
    jobid: 9
    wildcards: model=toy, task=sva, method=acdc
"""


def test_running_finished_and_failed_jobs(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs" / "acdc_circuit" / "toy" / "ioi"
    log_dir.mkdir(parents=True)
    bars = "acdc: 9 τ, edges:  10%|█| 82/823 [00:02<00:20]\racdc: 9 τ, edges:  52%|█| 430/823"
    (log_dir / "acdc.log").write_text("loading model\n" + bars)
    run = tmp_path / ".snakemake" / "log" / "2026-12-03T022609.snakemake.log"
    run.parent.mkdir(parents=True)
    run.write_text(RUN_LOG)
    state = parse_run_log(run)
    assert state.total == 3 and state.done == 0 and not state.ended
    assert sorted(state.running) == [7, 9] and state.running[7].name == "toy/ioi/acdc"
    out = io.StringIO()
    watch(tmp_path, once=True, console=Console(file=out, width=200))
    screen = out.getvalue()
    assert "acdc_circuit toy/ioi/acdc" in screen and "52%|█| 430/823" in screen
    assert "10%" not in screen  # only the bar's current state, not its history
    assert "(no log yet)" in screen  # job 9 has not written its log

    run.write_text(
        RUN_LOG
        + "Finished jobid: 7 (Rule: acdc_circuit)\n1 of 3 steps (33%) done\n"
        + "[Thu Dec  3 02:27:00 2026]\nError in rule acdc_circuit:\n    jobid: 9\n"
        + "    log: logs/acdc_circuit/toy/sva/acdc.log (check log file(s) for error details)\n"
        + "Exiting because a job execution failed. Look below for error messages\n"
    )
    state = parse_run_log(run)
    assert state.done == 1 and not state.running and list(state.failed) == [9] and state.ended
    assert state.failed[9].log == Path("logs/acdc_circuit/toy/sva/acdc.log")
    out = io.StringIO()
    watch(tmp_path, once=True, console=Console(file=out, width=200))
    assert "1 of 3 jobs done, failed" in out.getvalue() and "FAILED" in out.getvalue()


def test_a_finished_run_is_finished(tmp_path: Path) -> None:
    run = tmp_path / "x.snakemake.log"
    run.write_text(
        RUN_LOG + "Finished jobid: 7 (Rule: acdc_circuit)\nFinished jobid: 9 (Rule: acdc_circuit)\n"
        "3 of 3 steps (100%) done\nComplete log(s): /w/.snakemake/log/x.snakemake.log\n"
    )  # Snakemake 9's last lines
    state = parse_run_log(run)
    assert state.ended and state.done == state.total == 3 and not state.running


def test_last_line_of_a_missing_or_empty_log(tmp_path: Path) -> None:
    assert last_line(tmp_path / "nope.log") == "(no log yet)"
    (tmp_path / "e.log").write_text("\n\n")
    assert last_line(tmp_path / "e.log") == "(empty log)"


def test_started_with_a_run_it_waits_for_the_new_log_not_the_last_finished_one(
    tmp_path: Path,
) -> None:
    """`make watch` beside `make reproduce`: the newest log is the previous run's, finished;
    watch waits for the new run's log and follows it to its end."""
    import os
    import threading
    import time

    folder = tmp_path / ".snakemake" / "log"
    folder.mkdir(parents=True)
    old = folder / "2026-12-01T000000.000000.snakemake.log"
    old.write_text(RUN_LOG + "Nothing to be done (all requested files are present).\n")
    os.utime(old, (time.time() - 60, time.time() - 60))

    def start_run() -> None:
        time.sleep(0.5)
        new = folder / "2026-12-06T000000.000000.snakemake.log"
        new.write_text(RUN_LOG)
        time.sleep(0.5)
        with new.open("a") as f:
            f.write("Finished jobid: 7 (Rule: acdc_circuit)\nFinished jobid: 9 (Rule: x)\n"
                    "3 of 3 steps (100%) done\nComplete log(s): x\n")  # fmt: skip

    threading.Thread(target=start_run).start()
    out = io.StringIO()
    state = watch(tmp_path, interval=0.1, wait=10, console=Console(file=out, width=200))
    assert state is not None and state.log.name.startswith("2026-12-06") and state.done == 3
