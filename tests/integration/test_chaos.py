"""Never lose a file: damage a finished pipeline run the ways a researcher's files get damaged,
run the pipeline once, and check that every artifact is back, byte for byte.

On a copy of the shared tiny run, each case does the harm, then:
- `circuitlab plan --jobs` (`make plan`) lists the jobs, and the one real `snakemake` run
  executes exactly those jobs (the plan is the run);
- every file under data/ is back and identical to the finished run's (`artifact_digests`: JSON
  minus wall-clock durations; benchmark records and the report page, which hold timings only,
  are checked present);
- an edited file's edit is kept under .snakemake/circuitlab/edited/, byte for byte;
- afterwards `make plan` has nothing to do and a second run does nothing.

The cases: (a) a row of a checked dataset edited; (b) a metrics JSON edited, (e) intermediates
deleted (raw LRP attributions, a DOT file, a dataset's metrics) and (f) a final output deleted,
in one run; (c) the tokenizer and (d) the weights deleted from the model directory together
with (g) K seeded-random artifacts, in one run (it retrains the model: the whole graph reruns).
The cheaper plan-only checks of (c) alone — the weights are not touched — are below.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from circuitlab.provenance.plan import parse_dry_run
from cli_support import run
from pipeline_support import TIMING_ONLY, artifact_digests, jobs_run, snakemake, snakemake_env

EDITED = Path(".snakemake/circuitlab/edited")


@pytest.fixture(scope="module")
def chaos(pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished shared run (its W&B runs left behind) that the cases damage."""
    work = tmp_path_factory.mktemp("chaos") / "run"
    shutil.copytree(pipeline, work, symlinks=True, ignore=shutil.ignore_patterns("wandb"))
    assert jobs_run(snakemake(work, "--dry-run")) == {}
    return work


def test_every_file_a_job_writes_is_recorded(chaos: Path) -> None:
    """The guard can only find an edit of a file whose job recorded it: every file under data/
    but Snakemake's own benchmark records is."""
    import json

    recorded = set()
    for record in (chaos / ".snakemake" / "circuitlab" / "outputs").glob("*.json"):
        recorded |= set(json.loads(record.read_text())["files"])
    files = {
        p.relative_to(chaos).as_posix()
        for p in (chaos / "data").rglob("*")
        if p.is_file() and not p.relative_to(chaos).as_posix().startswith("data/benchmarks/")
    }
    assert files - recorded == set()


def planned(work: Path) -> tuple[list[tuple[str, str]], str]:
    """The jobs `circuitlab plan --jobs` lists (rule, wildcards), and its stderr."""
    proc = run("plan", "--jobs", cwd=work, env=snakemake_env(work))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = re.findall(r"^(\w+)\[(.*?)\]: ", proc.stdout, re.M)
    return sorted(jobs), proc.stderr


def executed(text: str) -> list[tuple[str, str]]:
    return sorted((j.rule, j.wildcards) for j in parse_dry_run(text))


def damage_and_repair(work: Path, harm: Callable[[Path], dict[str, bytes]]) -> list[str]:
    """Do `harm` (it returns the edited files' new bytes), plan, run once, check the repair;
    returns the rules that ran."""
    before = artifact_digests(work)
    timing = sorted(p for p in (work / "data").rglob("*") if p.is_file() and
                    p.relative_to(work).as_posix().startswith(TIMING_ONLY))  # fmt: skip
    edits = harm(work)
    plan, said = planned(work)
    assert plan, f"make plan saw nothing to do after the harm:\n{said}"
    proc = snakemake(work)
    assert executed(proc.stderr + proc.stdout) == plan, "the run is not the plan"
    after = artifact_digests(work)
    assert sorted(after) == sorted(before), "files missing or new after the repair"
    assert [p for p in before if before[p] != after[p]] == [], "files differ after the repair"
    assert all(p.is_file() for p in timing)
    for rel, text in edits.items():
        kept = list((work / EDITED).glob(f"*/{rel}"))
        assert any(k.read_bytes() == text for k in kept), f"the edit of {rel} was not kept"
    assert planned(work)[0] == [] and jobs_run(snakemake(work)) == {}
    return sorted({rule for rule, _ in plan})


def edit(work: Path, rel: str, change: Callable[[bytes], bytes]) -> bytes:
    path = work / rel
    new = change(path.read_bytes())
    assert new != path.read_bytes()
    path.write_bytes(new)
    return new


@pytest.mark.slow
def test_an_edited_dataset_row_is_rebuilt_and_the_edit_kept(chaos: Path) -> None:
    rel = "data/datasets/tiny/refusal.jsonl"  # checked rows: an intermediate

    def harm(work: Path) -> dict[str, bytes]:
        return {rel: edit(work, rel, lambda b: b.replace(b'"prompt": "', b'"prompt": "Hey ', 1))}

    rules = damage_and_repair(chaos, harm)
    assert "check_dataset" in rules and "train_toy_model" not in rules


@pytest.mark.slow
def test_edited_metrics_and_deleted_intermediate_and_final_outputs_are_rebuilt(
    chaos: Path,
) -> None:
    metrics = "data/metrics/compare/tiny/refusal.json"

    def harm(work: Path) -> dict[str, bytes]:
        for rel in (
            "data/circuits/tiny/induction/lrp.raw.safetensors",  # (e) intermediates
            "data/circuits/tiny/capitals/eap.dot",
            "data/metrics/datasets/capitals.json",
            "data/steering/tiny/refusal/caa.json",  # (f) a final output
        ):
            (work / rel).unlink()
        return {metrics: edit(work, metrics, lambda b: b.replace(b"{", b'{"edited": 1, ', 1))}

    rules = damage_and_repair(chaos, harm)
    assert {"compare", "lrp_attribution", "acdc_evaluate", "datasets", "caa_steering"} <= set(rules)


def test_a_deleted_tokenizer_file_plans_the_model_and_moves_nothing(chaos: Path) -> None:
    """(c) alone, plan only: the model's job is forced, the weights stay where they are."""
    model = chaos / "data" / "models" / "tiny"
    tokenizer = (model / "tokenizer.json").read_bytes()
    weights = (model / "model.safetensors").read_bytes()
    (model / "tokenizer.json").unlink()
    try:
        plan, said = planned(chaos)
        assert ("train_toy_model", "toy=tiny") in plan
        assert "deleted by hand since its job wrote it: data/models/tiny/tokenizer.json" in said
        assert (model / "model.safetensors").read_bytes() == weights
    finally:
        (model / "tokenizer.json").write_bytes(tokenizer)
    assert planned(chaos)[0] == []


@pytest.mark.slow
def test_model_files_and_random_artifacts_deleted_at_once_are_rebuilt(chaos: Path) -> None:
    """(c) + (d) + (g): the tokenizer, the weights and K = 6 artifacts drawn with a fixed seed
    from every file a job of the run wrote."""
    artifacts = sorted(p for p in artifact_digests(chaos) if "/models/" not in p)
    drawn = random.Random(25).sample(artifacts, 6)

    def harm(work: Path) -> dict[str, bytes]:
        for rel in [
            "data/models/tiny/tokenizer.json",
            "data/models/tiny/model.safetensors",
            *drawn,
        ]:
            (work / rel).unlink()
        return {}

    assert "train_toy_model" in damage_and_repair(chaos, harm)
