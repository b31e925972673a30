"""Two fresh runs of the same small config give bit-identical artifacts (DESIGN principle 8),
whether the jobs run in forks of the warm process (`circuitlab.warm`: the shared session run)
or each in its own fresh process (this second run, ``CIRCUITLAB_WARM=0``).

The second run is fresh (a new directory, a new model trained from scratch) and makes one
task's branch — datasets, the toy model, checks, evaluation, blacklist, LRP circuit and raw
attributions, faithfulness, every edge-circuit method and its evaluation, with their plots.
Every file it makes must be byte-identical to the shared session run's, except JSON fields
that are wall-clock durations: keys named `seconds` or ending in `_seconds` (LRP's
`attribution_seconds`, the toy model's `train_seconds`, an edge circuit's `seconds`), and
Snakemake's `benchmark:` records under data/benchmarks/ (each job's wall time, memory and CPU
use: measurements of the machine, not results). Those are left out of the comparison, and
nothing else is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline_support import (
    EDGE_METHODS,
    digest,
    make_workdir,
    snakemake,
    snakemake_env,
    without_timing,
)

TASK = "induction"


def targets(model: str) -> list[str]:
    return [
        f"data/circuits/{model}/{TASK}/lrp.json",
        f"data/metrics/lrp_faithfulness/{model}/{TASK}.json",
        *(f"data/circuits/{model}/{TASK}/{m}.json" for m in EDGE_METHODS),
        f"data/metrics/acdc_evaluate/{model}/{TASK}.json",
    ]


@pytest.mark.slow
def test_two_fresh_runs_give_identical_artifacts(
    pipeline: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    second = make_workdir(tmp_path_factory.mktemp("second_run"))
    shutil.copy(pipeline / "config" / "config.yaml", second / "config" / "config.yaml")
    cold = snakemake_env(second, CIRCUITLAB_WARM="0")  # every job its own process
    snakemake(second, *targets("tiny"), env=cold)

    made = sorted(p for p in (second / "data").rglob("*") if p.is_file())
    names = {p.relative_to(second).as_posix() for p in made}
    # the branch really ran: model weights, raw attributions, circuits, metrics, plots
    for expected in (
        "data/models/tiny/model.safetensors",
        f"data/datasets/{TASK}.jsonl",
        f"data/datasets/tiny/{TASK}.jsonl",
        "data/blacklists/tiny.json",
        f"data/circuits/tiny/{TASK}/lrp.raw.safetensors",
        f"data/circuits/tiny/{TASK}/acdc.dot",
        f"data/plots/lrp_faithfulness/tiny/{TASK}.png",
        "data/metrics/train_toy_model/tiny.json",
    ):
        assert expected in names, expected
    assert len(made) >= 30

    different, timing_fields = [], 0
    for path in made:
        rel = path.relative_to(second)
        if rel.parts[:2] == ("data", "benchmarks"):
            continue  # Snakemake's per-job time and memory records
        first = pipeline / rel
        assert first.exists(), f"{rel} is not in the first run"
        (a, removed), (b, _) = digest(first), digest(path)
        timing_fields += removed
        if a != b:
            different.append(rel.as_posix())
    assert different == [], f"artifacts differ between two fresh runs: {different}"
    assert timing_fields >= 1 + 1 + len(EDGE_METHODS)  # train, LRP and each edge circuit


def test_timing_filter_removes_only_durations() -> None:
    obj = {"seconds": 1.5, "train_seconds": 2, "n_seconds_budget": 3, "nested": [{"seconds": 0}]}
    assert without_timing(obj) == ({"n_seconds_budget": 3, "nested": [{}]}, 3)
