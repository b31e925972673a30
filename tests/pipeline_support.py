"""Running the Snakemake workflow on a tiny config in a temp copy (integration and rerun tests).

One session-scoped completed run (the `pipeline` fixture in tests/integration/conftest.py) is
shared by every test that needs finished artifacts; rerun tests use dry runs against it and
restore what they change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from circuitlab.acdc.registry import default_methods, get_method

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EDGE_METHODS = default_methods()  # every method that runs by default
#: those of them that also run on the TransformerLens backend's hooks
HOOK_METHODS = [m for m in EDGE_METHODS if get_method(m).hooks]
NETGUARD = ROOT / "tests" / "hardening" / "netguard"

TINY = {
    "seed": 0,
    "models": {
        "tiny": {
            "source": "toy",
            "architecture": {
                "n_layers": 1,
                "d_model": 32,
                "n_heads": 4,
                "n_kv_heads": 2,
                "d_mlp": 64,
                "max_seq_len": 64,
            },
            "training": {"steps": 20, "batch_size": 16, "warmup_steps": 2, "log_every": 5},
            # enough filler that every word of the default blacklist prompts is in the vocabulary
            "corpus": {"sentences_per_family": 400, "filler_sentences": 400},
        }
    },
    "tasks": {"capitals": {"n_train": 8, "n_test": 6}, "induction": {"n_train": 8, "n_test": 6}},
    "behaviours": {"refusal": {"n_train": 6, "n_test": 4}},
    "evaluation": {"batch_size": 8, "min_accuracy": 0.0},
    "blacklist": {"top_k": 8},
    "lrp": {"selection": {"method": "topk", "top_k": 10}},
    "contrastive": {"top_k": 10},
    "faithfulness": {"sizes": [0.05, 0.5], "random_seeds": 2, "calibration_neurons": 20},
    "acdc": {
        "methods": EDGE_METHODS,
        "tao_bases": [1.0],
        "tao_exps": [-2, -1],
        "reference_tau": 0.1,
        "n_prompts": 4,
        "n_eval_prompts": 4,
        "eap": {"sizes": [0.2, 0.5]},
    },
}


def make_workdir(work: Path, config: dict | None = None) -> Path:
    """A copy of the workflow (Snakefile, workflow/) with `config` as config/config.yaml."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config or TINY))
    return work


def project_copy(dest: Path) -> Path:
    """A copy of the project's files as git sees them (modification times kept, so `make` finds its
    set-up done) sharing the project's virtualenv: where a test runs a README command as typed
    (`make plan`, …) without writing into the project (tests/hermetic.py)."""
    tracked = subprocess.run(  # tracked, and new files not yet added (but not ignored ones)
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for rel in filter(None, tracked.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


def snakemake_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test's Snakemake run. W&B is disabled: a job's offline W&B run costs
    about a second of CPU, and only the shared run's tests look at W&B (that run sets its own
    mode: tests/integration/conftest.py)."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "CIRCUITLAB_ROOT": str(workdir),
        "WANDB_MODE": "disabled",
        **extra,
    }
    env.pop("CIRCUITLAB_RUN_GROUP", None)
    return env


def snakemake(
    workdir: Path,
    *args: str,
    profile: str = "workflow/profiles/default",
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`snakemake --cores 2 --workflow-profile PROFILE ARGS` in `workdir`; fails the test on error."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", "--workflow-profile", profile, *args],
        cwd=workdir,
        env=env or snakemake_env(workdir),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}" for p in (workdir / "logs").rglob("*.log")
        )
        pytest.fail(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{logs}"
        )
    return proc


def jobs_run(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule → count from Snakemake's "Job stats" table (empty when nothing was done)."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"
    }


class _Recorder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.hits: list[str] = []
        super().__init__(("127.0.0.1", 0), _RecordHandler)


class _RecordHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(2048).decode(errors="replace").strip()
        self.server.hits.append(line)  # type: ignore[attr-defined]


@contextlib.contextmanager
def network_guard(log: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Env vars that arm the in-Python guard (tests/hardening/netguard) in every process, and
    route any HTTP(S) client outside Python (W&B's Go service) through a local recorder.

    Yields (env additions, recorder hits): the hits are request lines such as
    "CONNECT api.wandb.ai:443 HTTP/1.1" received by the would-be proxy.
    """
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    pythonpath = os.pathsep.join(p for p in (str(NETGUARD), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "PYTHONPATH": pythonpath,
        "CIRCUITLAB_NETGUARD_LOG": str(log),
        **{
            k: proxy
            for k in (
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            )
        },
        "NO_PROXY": "",
        "no_proxy": "",
    }
    try:
        yield env, server.hits
    finally:
        server.shutdown()
        server.server_close()


def guard_events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def planned_jobs(proc: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    """The jobs a dry run (`-n`) lists: rule, reason, wildcards and resources of each."""
    jobs = []
    text = proc.stdout + proc.stderr
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        job = {"rule": head[1]}
        for key in ("reason", "wildcards", "resources"):
            m = re.search(rf"^\s+{key}: (.*)$", block, re.M)
            job[key] = m[1] if m else ""
        jobs.append(job)
    return jobs


@contextlib.contextmanager
def edited(path: Path, edit: Callable[[str], str]) -> Iterator[Path]:
    """Replace `path`'s text by `edit(text)` for the duration, then restore it byte for byte
    (and its modification time, so the restore itself is not a change Snakemake sees)."""
    before = path.read_bytes()
    stat = path.stat()
    after = edit(before.decode())
    assert after != before.decode(), f"the edit of {path} changed nothing"
    path.write_text(after)
    try:
        yield path
    finally:
        path.write_bytes(before)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def edited_config(work: Path, change: Callable[[dict], None]) -> contextlib.AbstractContextManager:
    """`edited` for config/config.yaml, with the change made on the parsed YAML."""

    def edit(text: str) -> str:
        cfg = yaml.safe_load(text)
        change(cfg)
        return yaml.safe_dump(cfg)

    return edited(work / "config" / "config.yaml", edit)


# ------------------------------------------------------------------ comparing two runs' files
# Artifacts are bit-identical between runs of the same config (DESIGN principle 8) except JSON
# fields that are wall-clock durations (keys named `seconds` or ending in `_seconds`) and
# Snakemake's `benchmark:` records under data/benchmarks/ (measurements of the machine, not
# results); the report page shows both, so it differs in its timing cells only.


def is_timing(key: str) -> bool:
    return key == "seconds" or key.endswith("_seconds")


def without_timing(value: Any) -> tuple[Any, int]:
    """(value minus timing keys, how many were removed)."""
    if isinstance(value, dict):
        out, removed = {}, 0
        for k, v in value.items():
            if is_timing(k):
                removed += 1
                continue
            out[k], n = without_timing(v)
            removed += n
        return out, removed
    if isinstance(value, list):
        items = [without_timing(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def digest(path: Path) -> tuple[str, int]:
    """sha256 of the file's bytes, or of its canonical JSON minus timing fields."""
    data = path.read_bytes()
    removed = 0
    if path.suffix == ".json":
        obj, removed = without_timing(json.loads(data))
        data = json.dumps(obj, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest(), removed


TIMING_ONLY = ("data/benchmarks/", "data/report/index.html")


def artifact_digests(work: Path) -> dict[str, str]:
    """Every file under `work`/data but the timing records (`TIMING_ONLY`): path → `digest`."""
    out = {}
    for path in sorted((work / "data").rglob("*")):
        rel = path.relative_to(work).as_posix()
        if path.is_file() and not rel.startswith(TIMING_ONLY) and not path.name.startswith("."):
            out[rel] = digest(path)[0]
    return out
