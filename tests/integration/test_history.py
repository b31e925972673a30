"""History and artifact versioning with DVC, on a copy of the shared tiny run (issue 6 §2).

The copy becomes a git repository with the project's .gitignore files, dvc.yaml and DVC config
(the remote pointed at a temp folder). Then, as README "Compare two runs" and "Versioning
artifacts with DVC" describe:

* `make snapshot`'s commands (`circuitlab save-state`, `dvc add` of every folder under data/,
  `dvc push`) and a commit;
* a fresh `git clone` + `dvc pull` gets back every artifact byte for byte, and a dry run has
  nothing to do: nothing is recomputed, nothing needs `make accept`;
* a second run with two changed parameters (one of them left at its default before), snapshotted
  and committed, shows up in `dvc params diff` (the default's old value included),
  `dvc metrics diff`, `dvc exp show` and `make history`;
* `git checkout` of the first snapshot + `dvc checkout` plans nothing, and back to the second
  plans what it planned when it was taken.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_support import ROOT, jobs_run, snakemake, snakemake_env

DVC = str(Path(sys.executable).parent / "dvc")
CIRCUITLAB = str(Path(sys.executable).parent / "circuitlab")
pytestmark = pytest.mark.slow


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def snapshot(repo: Path, message: str) -> None:
    """What `make snapshot` does (the state, every folder under data/), then a git commit."""
    sh(repo, CIRCUITLAB, "save-state")
    folders = sorted(
        p.relative_to(repo).as_posix() for p in (repo / "data").iterdir() if p.is_dir()
    )
    sh(repo, DVC, "add", "--quiet", *folders)
    sh(repo, DVC, "push", "--quiet")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", message)


def artifact_files(repo: Path) -> list[Path]:
    return sorted(
        p.relative_to(repo) for p in (repo / "data").rglob("*") if p.is_file() and
        not p.name.endswith(".dvc") and p.name != ".gitignore"
    )  # fmt: skip


@pytest.fixture(scope="module")
def repo(pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("history")
    repo = base / "a"
    shutil.copytree(pipeline, repo, symlinks=True, ignore=shutil.ignore_patterns("logs"))
    for name in (".gitignore", "data/.gitignore", "dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "test@example.org")
    sh(repo, "git", "config", "user.name", "test")
    sh(repo, DVC, "remote", "modify", "store", "url", str(base / "store"))
    snapshot(repo, "run 1")
    return repo


def test_fresh_clone_pulls_the_artifacts_and_recomputes_nothing(repo: Path) -> None:
    clone = repo.parent / "clone"
    sh(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    assert artifact_files(clone) == []  # git holds only the .dvc pointers
    sh(clone, DVC, "pull", "--quiet")
    files = artifact_files(clone)
    assert files == artifact_files(repo) and len(files) > 50
    _, mismatch, errors = filecmp.cmpfiles(repo, clone, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    proc = snakemake(clone, "--dry-run")  # no `make accept`, no --touch: the snapshot is current
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert "outputs are a snapshot's" in proc.stderr
    assert "without metadata" not in proc.stdout + proc.stderr
    assert jobs_run(snakemake(clone)) == {}  # and a real run runs nothing


def test_two_runs_compare_with_dvc(repo: Path) -> None:
    config = repo / "config" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    old = cfg["tasks"]["capitals"]["n_test"]
    cfg["tasks"]["capitals"]["n_test"] = old - 1
    assert "top_k" not in cfg.get("compare", {})  # at its default, 50, in run 1
    cfg["compare"] = {"top_k": 20}
    config.write_text(yaml.safe_dump(cfg))
    # run 2: that task's dataset, check and evaluation (the rest of the graph is left stale)
    snakemake(repo, "data/metrics/evaluate_model/tiny/capitals.json")
    planned = jobs_run(snakemake(repo, "--dry-run"))
    snapshot(repo, "run 2")

    params = json.loads(sh(repo, DVC, "params", "diff", "HEAD~1", "--json"))
    assert params["config/resolved.yaml"]["tasks.capitals.n_test"] == {
        "old": old, "new": old - 1, "diff": -1,
    }  # fmt: skip
    assert params["config/resolved.yaml"]["compare.top_k"] == {"old": 50, "new": 20, "diff": -30}
    metrics = json.loads(sh(repo, DVC, "metrics", "diff", "HEAD~1", "--json"))
    assert metrics["data/summary/datasets/capitals.json"]["test"]["diff"] == -1
    full = json.loads(
        sh(repo, DVC, "metrics", "diff", "HEAD~1", "--targets", "data/metrics/datasets", "--json")
    )
    assert full["data/metrics/datasets/capitals.json"]["n_test"]["diff"] == -1
    shown = json.loads(sh(repo, DVC, "metrics", "show", "--json"))
    assert shown, "dvc metrics show found no metrics"
    table = sh(repo, DVC, "exp", "show", "--md")
    assert "n_test" in table and ("master" in table or "main" in table)
    changed = sh(repo, DVC, "exp", "show", "-n", "2", "--only-changed", "--md")
    assert "top_k" in changed and "n_test" in changed

    # `make history`: both snapshots, the params that changed, the headline rows, one screen
    text = sh(repo, CIRCUITLAB, "history")
    lines = text.splitlines()
    first, second = sh(repo, "git", "log", "--format=%h", "-n", "2").split()[::-1]
    assert len(lines) <= 45 and max(map(len, lines)) <= 100, text
    assert f"  {first[:7]} → {second[:7]}  compare.top_k: 50 → 20" in lines, text
    row = next(line for line in lines if line.startswith("tiny/capitals accuracy"))
    assert len(row.split()[-2:]) == 2 and "workspace" not in text

    # restore = up to date: the first snapshot plans nothing; the second what it planned then
    sh(repo, "git", "checkout", "-q", "HEAD~1")
    sh(repo, DVC, "checkout", "--quiet")
    plan = subprocess.run(  # `make plan` first: it must not call the checked-out files edits
        [CIRCUITLAB, "plan"], cwd=repo, capture_output=True, text=True, timeout=300,
        env=snakemake_env(repo),
    )  # fmt: skip
    assert "Nothing to be done" in plan.stdout and "by hand" not in plan.stderr, plan.stderr
    assert jobs_run(snakemake(repo, "--dry-run")) == {}
    assert yaml.safe_load(config.read_text())["tasks"]["capitals"]["n_test"] == old
    sh(repo, "git", "checkout", "-q", "-")
    sh(repo, DVC, "checkout", "--quiet")
    assert jobs_run(snakemake(repo, "--dry-run")) == planned
