"""`make gpu-check DEVICE=cpu SHAPE=tiny-llama`: scripts/gpu_check.py end to end on the CPU —
two whole pipeline runs of config/gpu-check.yaml on a tiny random model, every stage, every
result compared (on one machine they agree exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_support import load_script

check = load_script("gpu_check")


@pytest.mark.slow  # two whole pipeline runs
def test_the_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    rc = check.main(["--device", "cpu", "--shape", "tiny-llama", "--workdir", str(tmp_path),
                     "--out", str(out), "--cores", "2"])  # fmt: skip
    report = json.loads(out.read_text())
    assert rc == 0, report["comparison"]
    legs = report["legs"]
    assert {legs[k]["device"] for k in legs} == {"cpu"}
    stages = set(legs["device"]["stages"])
    assert {"random_model", "evaluate_model", "blacklist", "lrp_attribution", "acdc_circuit/eap",
            "acdc_evaluate", "steering", "caa", "compare"} <= stages  # fmt: skip
    for stage in legs["device"]["stages"].values():  # Snakemake's benchmark of every job
        assert stage["jobs"] >= 1 and stage["seconds"] > 0 and stage["cpu_seconds"] > 0
    comparison = report["comparison"]
    assert comparison["numbers"] > 1000 and comparison["mismatches"] == []
