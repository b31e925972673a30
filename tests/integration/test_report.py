"""The report of the tiny integration pipeline (the shared session run, conftest.py):
self-contained, every stage's section present, and `snakemake --report` builds with captions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitlab.report.view import pct
from pipeline_support import TINY, snakemake
from report.selfcontained import assert_self_contained


@pytest.mark.slow
def test_pipeline_report_shows_every_stage(pipeline: Path) -> None:
    html = (pipeline / "data/report/index.html").read_text(encoding="utf-8")
    assert assert_self_contained(html) > 10
    tasks, behaviours = list(TINY["tasks"]), list(TINY["behaviours"])
    for name in (*tasks, *behaviours):
        assert f"<h4>{name}</h4>" in html, name
        scores = json.loads(
            (pipeline / "data/metrics/evaluate_model/tiny" / f"{name}.json").read_text()
        )
        assert f"<td>{pct(scores['test']['accuracy'])}</td>" in html
    for section in ("-training", "-blacklist", "-lrp", "-acdc", "-contrastive", "-steering",
                    "-compare"):  # fmt: skip
        assert f'id="tiny{section}"' in html, section
    timing = html.split('id="timing"', 1)[1]
    for rule in ("datasets", "train_toy_model", "lrp_circuit", "acdc_circuit", "steering"):
        assert f"<td>{rule}</td>" in timing, rule


@pytest.mark.slow
def test_snakemake_report_has_the_captions(pipeline: Path, tmp_path: Path) -> None:
    out = tmp_path / "snakemake-report.html"
    snakemake(pipeline, "--report", str(out))
    text = out.read_text(encoding="utf-8")
    assert "LRP circuit of <strong>capitals</strong> (tiny)" in text  # caption, wildcards filled
    assert "Edge circuits of <strong>induction</strong>" in text
    assert "index.html" in text


@pytest.mark.slow
def test_robustness_reads_every_verdict_of_a_real_run(pipeline: Path, tmp_path: Path) -> None:
    """`circuitlab robustness` on the shared run's artifacts, the model given as two seeds:
    every kind of verdict is found and every one agrees with itself; the file validates."""
    import subprocess

    from circuitlab.robustness.artifact import RobustnessSummary
    from pipeline_support import BIN

    out = tmp_path / "metrics" / "robustness" / "tiny.json"
    done = subprocess.run(
        [BIN / "circuitlab", "robustness", "--seed-model", "0=tiny", "--seed-model", "1=tiny",
         "--data", str(pipeline / "data"), "--min-accuracy", "0.0", "--metrics", str(out),
         "--plot", str(tmp_path / "robust.png")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = RobustnessSummary.load(out)
    kinds = {key.split("/", 1)[0] for key in summary.verdicts}
    assert kinds == {"accuracy", "lrp_beats_random", "acdc_beats_random", "steering",
                     "caa_vs_circuit"}  # fmt: skip
    names = list(TINY["tasks"]) + list(TINY["behaviours"])
    assert {f"accuracy/{n}" for n in names} <= set(summary.verdicts)
    assert summary.n_robust == summary.n_verdicts > 0
    assert f"{summary.n_robust} of {summary.n_verdicts} verdicts agree" in done.stdout
    assert (tmp_path / "robust.png").read_bytes().startswith(b"\x89PNG")
    headline = json.loads((tmp_path / "summary" / "robustness" / "tiny.json").read_text())
    assert headline == {"verdicts": summary.n_verdicts, "on_every_seed": summary.n_robust}
    # only the config's tasks: a file of another task in data/ is not read
    only = tmp_path / "only.json"
    subprocess.run(
        [BIN / "circuitlab", "robustness", "--seed-model", "0=tiny", "--seed-model", "1=tiny",
         "--data", str(pipeline / "data"), "--name", "capitals", "--metrics", str(only),
         "--plot", str(tmp_path / "only.png")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    keys = RobustnessSummary.load(only).verdicts
    assert keys and all(k.split("/")[1] == "capitals" for k in keys), sorted(keys)


@pytest.mark.slow
def test_diagnose_amplification_on_a_real_run(pipeline: Path, tmp_path: Path) -> None:
    """`circuitlab diagnose-amplification` reads a finished run's circuits and datasets."""
    import subprocess

    from pipeline_support import BIN

    out = tmp_path / "diag.json"
    done = subprocess.run(
        [BIN / "circuitlab", "diagnose-amplification", "--data", str(pipeline / "data"),
         "--model-name", "tiny", "--task", "capitals", "--task", "refusal",
         "--multipliers", "2", "--out", str(out)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())["results"]
    assert [(r["task"], r["method"]) for r in results] == [
        ("capitals", "lrp"),
        ("refusal", "lrp"),
        ("refusal", "contrastive"),
    ]
    assert "capitals/lrp (unsteered" in done.stdout and results[0]["norm"] is not None
