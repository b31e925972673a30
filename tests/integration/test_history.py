"""History and artifact versioning with DVC, on a copy of the shared tiny run (issue 6 §2).

The copy becomes a git repository with the project's .gitignore files, dvc.yaml and DVC config
(the remote pointed at a temp folder). Then, as README "Compare two runs" and "Versioning
artifacts with DVC" describe:

* `make snapshot`'s commands (`dvc add` of every folder under data/, `dvc push`) and a commit;
* a fresh `git clone` + `dvc pull` gets back every artifact byte for byte, and after
  `snakemake --touch` a dry run has nothing to do: nothing is recomputed;
* a second run with one changed parameter, snapshotted and committed, shows up in
  `dvc params diff`, `dvc metrics diff` and `dvc exp show`.
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

from pipeline_support import ROOT, snakemake

DVC = str(Path(sys.executable).parent / "dvc")
pytestmark = pytest.mark.slow


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def snapshot(repo: Path, message: str) -> None:
    """What `make snapshot` does (every folder under data/), then a git commit."""
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
    snakemake(clone, "--touch", "--cores", "1")
    proc = snakemake(clone, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_two_runs_compare_with_dvc(repo: Path) -> None:
    config = repo / "config" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    old = cfg["tasks"]["capitals"]["n_test"]
    cfg["tasks"]["capitals"]["n_test"] = old - 1
    config.write_text(yaml.safe_dump(cfg))
    snakemake(repo, "data/metrics/datasets/capitals.json")  # run 2: that branch's first job
    snapshot(repo, "run 2")

    params = json.loads(sh(repo, DVC, "params", "diff", "HEAD~1", "--json"))
    assert params["config/config.yaml"]["tasks.capitals.n_test"] == {
        "old": old, "new": old - 1, "diff": -1,
    }  # fmt: skip
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
