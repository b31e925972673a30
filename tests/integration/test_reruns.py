"""Incremental reruns, proven by dry runs (`snakemake -n`) on the shared completed tiny run.

The rerun triggers are the default profile's (`rerun-triggers: mtime params input code`, see
README "Incremental reruns"). Each test changes one thing in the run's copy of the workflow,
asks Snakemake what it would do, and restores the file. Expectations are written in rule
*names* and wildcards, and a job that is not itself affected must be listed only because an
upstream job will update its input, so rules added later (steering, CAA, report) are covered
without editing these tests.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline_support import EDGE_METHODS, edited, edited_config, planned_jobs, snakemake

#: Rules upstream of, or beside, the circuits: none of them may rerun for an LRP, steering or
#: code change elsewhere.
UPSTREAM = {
    "datasets",
    "train_toy_model",
    "model_ref",
    "check_dataset",
    "evaluate_model",
    "blacklist",
}
#: Rules that discover circuits or vectors: for a change elsewhere they may rerun only because
#: an upstream job reruns, never for their own reason.
DISCOVERY = {
    "lrp_attribution",
    "lrp_circuit",
    "lrp_faithfulness",
    "contrastive_circuit",
    "acdc_circuit",
    "acdc_evaluate",
}
#: Reasons that make a job stale by itself (anything else in a reason is propagation:
#: "Input files updated by another job").
OWN_REASONS = (
    "Params have changed",
    "Code has changed",
    "Set of input files has changed",
    "Updated input files",
    "Missing output files",
    "Forced execution",
)

pytestmark = pytest.mark.slow  # they share the session's completed pipeline run


def dry_run(work: Path) -> list[dict[str, str]]:
    return planned_jobs(snakemake(work, "--dry-run"))


def counts(jobs: list[dict[str, str]]) -> Counter[str]:
    return Counter(j["rule"] for j in jobs)


def direct(jobs: list[dict[str, str]]) -> list[dict[str, str]]:
    """Jobs that rerun for their own reason, not only because an upstream job reruns."""
    return [j for j in jobs if j["rule"] != "all" and any(r in j["reason"] for r in OWN_REASONS)]


def test_no_op_dry_run_plans_nothing(pipeline: Path) -> None:
    proc = snakemake(pipeline, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert planned_jobs(proc) == []


def test_an_lrp_selection_parameter_reruns_only_the_selection(pipeline: Path) -> None:
    def change(cfg: dict) -> None:
        cfg["lrp"]["selection"]["top_k"] = 9

    with edited_config(pipeline, change):
        jobs = dry_run(pipeline)
    n_datasets = 3  # capitals, induction (tasks) and refusal (behaviour)
    own = direct(jobs)
    # the circuit is re-selected from the saved attributions; neither the attributions nor
    # the faithfulness report (which ranks neurons itself) rerun
    assert counts(own) == {"lrp_circuit": n_datasets}, own
    assert all("Params have changed" in j["reason"] for j in own)
    rerun = set(counts(jobs))
    assert not rerun & (UPSTREAM | DISCOVERY - {"lrp_circuit"}), rerun


def test_an_lrp_attribution_parameter_reruns_attributions_and_faithfulness(pipeline: Path) -> None:
    def change(cfg: dict) -> None:
        cfg["lrp"]["batch_size"] = 7

    with edited_config(pipeline, change):
        jobs = dry_run(pipeline)
    own = direct(jobs)
    # faithfulness reads the same keys, but Snakemake reports only that its input is rebuilt
    assert set(counts(own)) == {"lrp_attribution"}, own
    assert {"lrp_faithfulness", "lrp_circuit"} <= set(counts(jobs))
    assert not set(counts(jobs)) & (
        UPSTREAM | {"acdc_circuit", "acdc_evaluate", "contrastive_circuit"}
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # a method's own key: that method's discovery jobs (one per task) and the evaluation
        ("eap", {"sizes": [0.3]}, {("acdc_circuit", "eap")}),
        ("head_pruning", {"threshold": 0.2}, {("acdc_circuit", "head_pruning")}),
        # evaluation-only keys: no discovery job
        ("n_eval_prompts", 3, {("acdc_evaluate", None)}),
        # which τ's circuit is compared and drawn: the evaluation's choice, not discovery's
        ("reference_tau", 0.01, {("acdc_evaluate", None)}),
        ("batch_size", 3, {("acdc_evaluate", None)}),
    ],
)
def test_an_acdc_key_reruns_only_the_jobs_that_read_it(
    pipeline: Path, key: str, value: object, expected: set
) -> None:
    def change(cfg: dict) -> None:
        cfg["acdc"][key] = value

    with edited_config(pipeline, change):
        jobs = dry_run(pipeline)
    own = {
        (
            j["rule"],
            re.search(r"method=(\w+)", j["wildcards"])[1] if "method=" in j["wildcards"] else None,
        )
        for j in direct(jobs)
    }
    assert own == expected, direct(jobs)
    assert set(counts(jobs)) <= {"acdc_circuit", "acdc_evaluate", "report", "record", "all"}


def test_the_accuracy_gate_threshold_reruns_only_the_evaluation(pipeline: Path) -> None:
    """The gate is an `ancient` input: a gate file rewritten by a new threshold (same accuracy)
    reruns no circuit."""

    def change(cfg: dict) -> None:
        cfg["evaluation"]["min_accuracy"] = 0.01

    with edited_config(pipeline, change):
        jobs = dry_run(pipeline)
    assert set(counts(direct(jobs))) == {"evaluate_model"}
    assert set(counts(jobs)) <= {"evaluate_model", "report", "record", "all"}


def test_one_tasks_dataset_parameter_reruns_only_that_tasks_branch(pipeline: Path) -> None:
    def change(cfg: dict) -> None:
        cfg["tasks"]["induction"]["n_train"] = 7

    with edited_config(pipeline, change):
        jobs = dry_run(pipeline)
    assert [(j["rule"], j["wildcards"]) for j in direct(jobs)] == [("datasets", "task=induction")]
    # everything else follows from that one dataset; other tasks' jobs only downstream of it
    # (steering measures side effects on every task's test split), never a discovery job
    others = [j for j in jobs if j["rule"] != "all" and "task=induction" not in j["wildcards"]]
    assert not {j["rule"] for j in others} & (UPSTREAM | DISCOVERY | {"caa"}), others
    expected = {
        "datasets": 1,
        "check_dataset": 1,
        "evaluate_model": 1,
        "lrp_attribution": 1,
        "lrp_circuit": 1,
        "lrp_faithfulness": 1,
        "acdc_circuit": len(EDGE_METHODS),
        "acdc_evaluate": 1,
    }
    got = counts(jobs)
    assert {r: got[r] for r in expected} == expected
    # split sizes are not corpus parameters: the model and its blacklist stay
    assert not got.keys() & {"train_toy_model", "blacklist", "contrastive_circuit"}


def test_a_rules_command_change_reruns_that_rule(pipeline: Path) -> None:
    """`code` is a trigger: editing a rule's shell command reruns its jobs (and no other's)."""
    rule_file = pipeline / "workflow" / "rules" / "lrp.smk"

    def edit(text: str) -> str:  # the same command, one space more: a different command text
        return text.replace(
            "--out {output.blacklist} --metrics", "--out {output.blacklist}  --metrics"
        )

    with edited(rule_file, edit):
        jobs = dry_run(pipeline)
    own = direct(jobs)
    assert counts(own) == {"blacklist": 1}, own
    assert "Code has changed" in own[0]["reason"]
    # downstream of the blacklist: the LRP circuits, then their faithfulness reports
    assert set(counts(jobs)) <= {
        "blacklist",
        "lrp_attribution",
        "lrp_circuit",
        "lrp_faithfulness",
        "all",
    } | {r for r in counts(jobs) if re.search("steer|compare|report|record", r)}


def test_steering_multipliers_rerun_only_steering_compare_and_report(pipeline: Path) -> None:
    rules = snakemake(pipeline, "--list-rules").stdout.split()
    if "steering" not in rules:
        pytest.skip("no `steering` rule yet (issue 5): the integrator enables this test")
    from circuitlab.config import Config

    if "steering" not in Config.model_fields:
        pytest.skip("the config has no `steering` section yet (issue 5)")

    def change(cfg: dict) -> None:
        section = cfg.setdefault("steering", {})
        default = Config.model_fields["steering"].get_default(call_default_factory=True)
        current = list(section.get("multipliers") or default.multipliers)
        section["multipliers"] = [*current, max(current) + 1.0]

    with edited_config(pipeline, change):
        jobs = dry_run(pipeline)
    rerun = set(counts(jobs)) - {"all"}
    # the steering evaluations of circuits and of CAA vectors, their summary and the report;
    # not the vectors (`caa` reads only the neutral prompts) and not compare (its own sweep)
    assert rerun == {"steering", "caa_steering", "steering_summary", "report", "record"}, rerun
