"""The stage table (circuitlab.stages) is the one list of the workflow's rules and what each
needs: every rule of the Snakefile is in it, and the readers derive from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from circuitlab import jobs
from circuitlab.models import bridge
from circuitlab.stages import ADAPTER_RULES, MODEL_RULES, STAGES, Stage

ROOT = Path(__file__).resolve().parents[1]


def workflow_rules() -> set[str]:
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    return {m for f in files for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)} - {"all"}


def test_every_rule_of_the_workflow_is_in_the_table_and_nothing_else() -> None:
    assert set(STAGES) == workflow_rules()


def test_each_model_loading_rule_passes_the_device_and_takes_a_gpu() -> None:
    """The rules' text: a rule of `MODEL_RULES` has `--device` and `gpu=model_gpu`, no other."""
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    for block in re.split(r"\n(?=rule \w+:)", text):
        head = re.match(r"rule (\w+):", block)
        if head:
            loads = head[1] in MODEL_RULES
            assert ("--device {params.device}" in block) == loads, head[1]
            assert ("gpu=model_gpu" in block) == loads, head[1]


def test_the_readers_derive_from_the_table() -> None:
    assert jobs.ADAPTER_RULES is ADAPTER_RULES
    assert {
        "blacklist", "lrp_attribution", "lrp_circuit", "lrp_faithfulness",
        "contrastive_circuit", "steering", "compare",
    } == ADAPTER_RULES  # fmt: skip
    assert {r for r, why in bridge.STAGES.items() if why} == ADAPTER_RULES
    assert set(bridge.STAGES) == MODEL_RULES | ADAPTER_RULES
    message = bridge.needs_adapter_message("LRP attribution", "m")
    for rule in MODEL_RULES - ADAPTER_RULES:
        assert STAGES[rule].label in message


def test_a_stage_needing_the_adapter_says_why() -> None:
    with pytest.raises(ValueError, match="says why"):
        Stage("x", needs_adapter=True, loads_model=True)
    with pytest.raises(ValueError, match="says why"):
        Stage("x", needs_adapter=False, loads_model=True, reason="because")
