"""Every command the README shows runs as typed (issue: commands that work as typed).

Each command line of the README's code blocks must be listed here: either run by this test
from the project folder exactly as written (dry runs, validation, `make watch` on no run) or
named with the test that runs it (a whole pipeline, the test suite itself, an interactive
session). A command added to the README without an entry here fails the first test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_support import project_copy

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND = re.compile(
    r"^(make |\.venv/bin/|snakemake |circuitlab |dvc |source \S*activate|sha256sum )"
)

#: run here, as typed (each must exit 0 within the timeout)
RUN = {
    "make plan",
    "make dryrun CONFIG=config/gpt2.yaml",
    ".venv/bin/circuitlab validate-config config/config.yaml",
    ".venv/bin/circuitlab validate-config config/gpt2.yaml",
    ".venv/bin/snakemake --workflow-profile workflow/profiles/slurm --configfile config/llama-3.1-8b.yaml -n",
}
#: run elsewhere: the command → the test that runs it (or why it is not run)
ELSEWHERE = {
    "make reproduce": "tests/integration/test_pipeline.py (the Snakemake pipeline on a tiny config)",
    "make test": "CI runs it (.ci/run)",
    "make reproduce CONFIG=config/gpt2.yaml": "needs GPT-2 from the hub; the dry run is run here",
    "make reproduce CONFIG=config/scale-gpt2.yaml": "tens of minutes on a CPU (BENCHMARKS.md, 'Real shapes'); tests/models/test_random.py validates every scale overlay and builds its model",
    ".venv/bin/python scripts/cost_table.py --model gpt2-small": "needs a finished scale run; tests/test_cost_table.py runs it on a fake run folder",
    "make gpu-check": "needs a GPU; the DEVICE=cpu form below is run",
    "make gpu-check DEVICE=cpu SHAPE=tiny-llama": "tests/integration/test_gpu_check_run.py (scripts/gpu_check.py with these arguments)",
    'make reproduce ARGS="--forcerun acdc_circuit"': "a whole pipeline; --forcerun is Snakemake's",
    "make watch": "test_make_watch_without_a_run (below); tests/test_watch.py",
    "make report": "Snakemake's --report after a completed run (tests/integration/test_pipeline.py)",
    "make results": "test_results_tables_come_from_the_run (tests/integration/test_pipeline.py)",
    ".venv/bin/circuitlab repl --model data/models/toy": "tests/test_repl.py (a pty session)",
    "make snapshot": "tests/integration/test_history.py",
    "make setup && .venv/bin/dvc pull": "tests/integration/test_history.py",
    ".venv/bin/dvc params diff HEAD~1": "tests/integration/test_history.py",
    ".venv/bin/dvc metrics diff HEAD~1": "tests/integration/test_history.py",
    ".venv/bin/dvc metrics diff HEAD~1 --targets data/metrics/datasets": "tests/integration/test_history.py",
    ".venv/bin/dvc exp show": "tests/integration/test_history.py",
    ".venv/bin/dvc exp show -n 2 --only-changed": "tests/integration/test_history.py",
    "make history": "tests/integration/test_history.py (circuitlab history on two snapshots)",
    ".venv/bin/dvc plots diff HEAD~1": "writes dvc_plots/ (git-ignored); the plots are data/plots",
    "sha256sum data/models/toy/model.safetensors": "tests/integration/test_determinism.py",
    ".venv/bin/circuitlab export --circuit data/circuits/toy/ioi/acdc.json --tau 0.01 --out ioi_acdc.tl.json": "needs a completed run; tests/interop/test_tl_oracle.py exports and round-trips",
    ".venv/bin/circuitlab export --circuit data/circuits/toy/ioi/lrp.json --out ioi_lrp.tl.json": "needs a completed run; export_neurons in tests/interop/test_tl_oracle.py",
}


def readme_commands() -> list[str]:
    commands, inside = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            cmd = line.split("  #")[0].strip()
            if COMMAND.match(cmd) and not cmd.startswith("git "):
                commands.append(cmd)
    return commands


def test_every_readme_command_is_run_or_covered() -> None:
    found = readme_commands()
    assert "make reproduce" in found and "make test" in found
    unknown = [c for c in found if c not in RUN and c not in ELSEWHERE]
    assert not unknown, (
        f"README commands not run by a test: {unknown} (add them to RUN or ELSEWHERE)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUN))
def test_readme_command_runs_as_typed(command: str, tmp_path: Path) -> None:
    if command not in readme_commands():
        pytest.skip(f"{command!r} is no longer in the README")
    # not activated, and as typed in a shell: not inside the `make test ARGS=…` that runs us
    # (make exports its command-line variables to the recipes)
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    outer = {"VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    outer |= set(re.findall(r"^(\w+)\s*\?=", makefile, re.M))
    env = {k: v for k, v in os.environ.items() if k not in outer}
    work = project_copy(tmp_path / "project")  # as typed, in a copy: the project stays as it is
    proc = subprocess.run(
        command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_make_watch_without_a_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "circuitlab.cli", "watch", "--once"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "no Snakemake run found" in proc.stdout


def test_the_page_make_report_writes_is_git_ignored() -> None:
    import subprocess

    proc = subprocess.run(["git", "check-ignore", "-q", "report.html"], cwd=ROOT, check=False)
    assert proc.returncode == 0, "report.html (`make report`) would be committed by `git add .`"


def test_the_edge_methods_table_is_the_registrys() -> None:
    """README's methods table is `circuitlab acdc-methods` (generated from the registry)."""
    from circuitlab.acdc.registry import methods_table

    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- acdc-methods:begin -->\n(.*?)\n<!-- acdc-methods:end -->", text, re.S)
    assert m, "README lost its acdc-methods markers"
    assert m[1] == methods_table(), (
        "README's methods table is stale: paste `.venv/bin/circuitlab acdc-methods` between "
        "the acdc-methods markers"
    )
