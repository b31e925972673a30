"""The rebuild guard forces this run's edited or deleted outputs into Snakemake's DAG (the same
in a dry run, so the plan is the run), keeps a copy of each edit in a real run, moves nothing,
and stays out of the invocations that only report or record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from circuitlab.errors import CircuitlabError
from circuitlab.provenance import guard
from circuitlab.provenance.manifest import EDITED, altered, record_outputs


@dataclass
class Settings:
    forcerun: frozenset[str] = frozenset({"data/user.json"})


@dataclass
class FakeWorkflow:
    """What the guard touches of Snakemake's Workflow: `_prepare_dag` reads `dag_settings`."""

    is_main_process: bool = True
    dag_settings: Any = None  # set by Snakemake after the Snakefile is parsed
    seen: list[frozenset[str]] = field(default_factory=list)

    def _prepare_dag(self, *args: Any, **kwargs: Any) -> str:
        self.seen.append(self.dag_settings.forcerun)
        return "dag"


def finished_run(root: Path) -> tuple[Path, Path]:
    rows, weights = root / "data/datasets/a.jsonl", root / "data/models/m/model.safetensors"
    for path, text in ((rows, "row\n"), (weights, "weights")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    record_outputs([rows, weights], root=root)
    return rows, weights


@pytest.mark.parametrize("dry", [True, False])
def test_damaged_outputs_are_forced_when_the_dag_is_prepared(tmp_path: Path, dry: bool) -> None:
    rows, weights = finished_run(tmp_path)
    rows.write_text("edited\n")
    weights.unlink()
    wf = FakeWorkflow()
    graph = ["data/datasets/a.jsonl", "data/models/m/model.safetensors"]
    found = guard.install(wf, graph, dry=dry, root=tmp_path, argv=["--cores", "2"])
    assert {c.why for c in found.forced} == {"edited", "deleted"}
    wf.dag_settings = Settings()  # Snakemake sets its DAG settings after parsing
    assert wf._prepare_dag(forceall=False) == "dag"
    assert wf.seen == [frozenset({"data/user.json", *graph})]  # the user's --forcerun kept
    assert rows.read_text() == "edited\n"  # nothing moved: the forced job replaces it
    kept = [p for p in (tmp_path / EDITED).rglob("*") if p.is_file()]
    assert [p.read_text() for p in kept] == ([] if dry else ["edited\n"])
    # a run stopped before the forced job ran: the edit is still found, the next run repairs it
    assert {(c.path, c.why) for c in altered(tmp_path)} == {
        ("data/datasets/a.jsonl", "edited"),
        ("data/models/m/model.safetensors", "deleted"),
    }


@pytest.mark.parametrize(
    "argv,env,main",
    [
        (["--touch"], {}, True),  # `make accept`
        (["--report", "r.html"], {}, True),
        (["--list-changes", "params"], {}, True),
        ([], {"CIRCUITLAB_ACCEPT": "1"}, True),
        ([], {}, False),  # a cluster job's own Snakemake
    ],
)
def test_reporting_and_recording_invocations_force_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict, main: bool
) -> None:
    rows, _ = finished_run(tmp_path)
    rows.write_text("edited\n")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    wf = FakeWorkflow(is_main_process=main)
    found = guard.install(wf, ["data/datasets/a.jsonl"], dry=False, root=tmp_path, argv=argv)
    assert found.forced == () and "_prepare_dag" not in vars(wf)
    assert not (tmp_path / EDITED).exists()


def test_outputs_outside_the_graph_are_named_and_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, _ = finished_run(tmp_path)
    rows.write_text("edited\n")
    wf = FakeWorkflow()
    found = guard.install(wf, [], dry=False, root=tmp_path, argv=[])
    assert found.forced == () and [c.path for c in found.outside] == ["data/datasets/a.jsonl"]
    assert "no job of this config writes it: left as it is" in capsys.readouterr().err
    assert rows.read_text() == "edited\n" and not (tmp_path / EDITED).exists()


def test_a_snakemake_without_the_hook_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    rows, _ = finished_run(tmp_path)
    rows.write_text("edited\n")

    class Other:
        is_main_process = True

    with pytest.raises(CircuitlabError, match="_prepare_dag"):
        guard.install(Other(), ["data/datasets/a.jsonl"], dry=True, root=tmp_path, argv=[])
