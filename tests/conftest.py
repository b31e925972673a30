"""Shared fixtures: a tiny pipeline config and the environment every test runs in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hermetic
from circuitlab.provenance import numerics

# The pipeline's numerics pins, before anything imports torch (ATen and MKL read them once), so
# in-process tests compute what the pipeline's jobs compute.
numerics.apply()

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _wandb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wandb-root")


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch, _wandb_root: Path) -> None:
    """No test reaches the network (W&B offline, the HF hub offline), and no test's W&B run
    lands in the project's history (logs/wandb/): tests log under a temporary root."""
    monkeypatch.setenv("CIRCUITLAB_ROOT", str(_wandb_root))
    monkeypatch.setenv("WANDB_MODE", os.environ.get("CIRCUITLAB_TEST_WANDB_MODE", "offline"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


_TREE = pytest.StashKey[dict]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """The project tree as the session found it (tests/hermetic.py)."""
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_TREE] = hermetic.listing(ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a test wrote into the project tree (tests/hermetic.py)."""
    before = session.config.stash.get(_TREE, None)
    if before is None:
        return
    changed = hermetic.changes(before, hermetic.listing(ROOT))
    if changed:
        shown = "\n  ".join(changed[:30]) + (
            f"\n  … {len(changed) - 30} more" if len(changed) > 30 else ""
        )
        session.config.get_terminal_writer().line(
            f"\nthe tests changed the project tree (tests must write under tmp_path):\n  {shown}",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: Tests that use the shared pipeline run (tests/integration/conftest.py), and the other tests
#: that run a Snakemake pipeline, a toy training or the CLI against one. Under pytest-xdist each
#: group runs on one worker, in this order, so the shared run is made once and at most two
#: pipelines share the two cores, while the unit tests fill the gaps.
SHARED_RUN = tuple(
    f"tests/integration/test_{name}.py"
    for name in (
        "pipeline",
        "reruns",
        "provenance",
        "offline",
        "report",
        "determinism",
        "history",
        "chaos",
    )
)
HEAVY = (
    "tests/integration/",
    "tests/hardening/test_killed_write.py",
    "tests/provenance/test_golden.py",
    "tests/test_readme.py",
)


def _scope(nodeid: str) -> tuple[int, str]:
    """(rank, xdist scope) of a test: the shared run's users, the other heavy tests, then each
    remaining module on its own."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(SHARED_RUN):
        return 0, "shared-run"
    if path.startswith(HEAVY):
        return 1, "heavy"
    return 2, path


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test TEST_WORKERS=2`: xdist's load-by-scope scheduling over `_scope`, in collection
    order (the heavy scopes first: they are the longest chains).

    Not ``--dist loadgroup`` with ``xdist_group`` marks: pytest-xdist 3.8 groups by appending
    the group to ``item._nodeid``, which pytest 9.2 no longer reads (it keeps ``item._id``), so
    the groups were silently ignored and both workers built the shared pipeline run."""
    from xdist.scheduler import LoadScopeScheduling

    class HeavyApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)[1]

    config.option.loadscopereorder = False  # keep the order below, not largest scope first
    return HeavyApart(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every user of the shared run is in `SHARED_RUN` (else a second xdist worker would build
    it again). On an xdist worker: the heavy scopes first, so each worker starts one of the two
    long chains at once (xdist hands out scopes in collection order); one process keeps the
    usual order."""
    for item in items:
        uses = {"pipeline_run", "pipeline"} & set(getattr(item, "fixturenames", ()))
        if uses and _scope(item.nodeid)[1] != "shared-run":
            raise pytest.UsageError(
                f"{item.nodeid} uses the shared pipeline run: add its module to SHARED_RUN in "
                "tests/conftest.py"
            )
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _scope(item.nodeid)[0])
