"""A wrong config on the way into the pipeline is one or two lines with the fix, never a
traceback through Snakemake: a YAML syntax error in config/config.yaml (with its line), a
`CONFIG=` overlay that does not exist or does not parse (checked by the Makefile before
Snakemake starts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline_support import make_workdir, snakemake

ROOT = Path(__file__).resolve().parents[2]


def test_a_yaml_syntax_error_in_the_base_config_names_its_line(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "w")
    config = work / "config" / "config.yaml"
    config.write_text(config.read_text() + "lrp: {selection: [topk}\n")
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if "config.yaml" in line]
    assert any("line" in line and "not valid YAML" in line for line in ours), proc.stderr
    assert "Traceback" not in proc.stderr


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_missing_overlay_fails_in_one_line_before_snakemake(tmp_path: Path) -> None:
    for target in ("plan", "dryrun"):
        proc = make(target, f"CONFIG={tmp_path / 'nope.yaml'}")
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert "does not exist" in lines[0] and len(lines) <= 2, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_an_overlay_with_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  gpt2: {source: hf, id: [gpt2}\n")
    proc = make("dryrun", f"CONFIG={bad}")
    assert proc.returncode != 0 and "line 2" in proc.stderr and "Traceback" not in proc.stderr
