"""Weights & Biases for `circuitlab.tracking.log_metrics`: the mode this process may use (offline
unless asked, never prompting), the run group, and one run per call, kept in
``<root>/logs/wandb/``."""

from __future__ import annotations

import netrc
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from circuitlab.errors import CircuitlabError, ConfigError
from circuitlab.io import file_stamp
from circuitlab.provenance.state import WANDB as KEPT

Mode = Literal["online", "offline", "disabled"]

ENV_PROJECT = "CIRCUITLAB_WANDB_PROJECT"
ENV_GROUP = "CIRCUITLAB_RUN_GROUP"
ENV_RULE = "CIRCUITLAB_RULE"
ENV_ROOT = "CIRCUITLAB_ROOT"
DEFAULT_PROJECT = "circuitlab"
#: where the offline runs live (under the project root); `make snapshot` copies them to KEPT
RUNS = Path("logs/wandb")

_MODES: dict[str, Mode] = {
    "offline": "offline",
    "dryrun": "offline",
    "online": "online",
    "run": "online",
    "disabled": "disabled",
}
_process_group: str | None = None


class TrackingWarning(UserWarning):
    """W&B could not be used as asked (e.g. online without an API key) and fell back."""


def resolve_mode() -> Mode:
    """The W&B mode this process will use: ``WANDB_MODE`` (default offline), made safe.

    ``online`` without credentials becomes ``offline`` with a `TrackingWarning`.
    """
    raw = os.environ.get("WANDB_MODE", "").strip().lower()
    if not raw:
        mode: Mode = "disabled" if _truthy(os.environ.get("WANDB_DISABLED")) else "offline"
        return mode
    if raw not in _MODES:
        raise ConfigError(
            f"WANDB_MODE={raw!r} is not supported: use 'offline' (default), 'online' or 'disabled'"
        )
    mode = _MODES[raw]
    if mode == "online" and not _has_wandb_credentials():
        warnings.warn(
            "WANDB_MODE=online but no W&B API key was found (WANDB_API_KEY, "
            "WANDB_IDENTITY_TOKEN_FILE or ~/.netrc); logging offline instead. Sync later with "
            "`wandb sync logs/wandb/offline-run-*`.",
            TrackingWarning,
            stacklevel=3,
        )
        mode = "offline"
    return mode


def run_group() -> str:
    """The W&B group: ``CIRCUITLAB_RUN_GROUP``, else one generated name for this process."""
    global _process_group
    group = os.environ.get(ENV_GROUP, "").strip()
    if group:
        return group
    if _process_group is None:
        _process_group = f"adhoc-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    return _process_group


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _has_wandb_credentials() -> bool:
    """Whether wandb would find credentials without prompting (env, identity token, netrc)."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "") or "https://api.wandb.ai").netloc
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else []
    home = Path(os.path.expanduser("~"))
    candidates += [str(home / ".netrc"), str(home / "_netrc")]
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            auth = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if auth and auth[2]:
            return True
    return False


def project_root() -> Path:
    """``CIRCUITLAB_ROOT`` or the working directory; W&B runs go to its ``logs/wandb/``."""
    root = os.environ.get(ENV_ROOT, "").strip()
    return Path(root).resolve() if root else Path.cwd()


def _settings(mode: Mode) -> Any:
    import wandb

    return wandb.Settings(
        mode=mode,
        silent=True,
        console="off",
        save_code=False,
        disable_code=True,
        disable_git=True,
        disable_job_creation=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
        init_timeout=60.0,
    )


def log_to_wandb(
    *,
    mode: Mode,
    stage: str,
    run_name: str | None,
    config: dict[str, Any],
    tags: list[str],
    summary: dict[str, Any],
    series: Mapping[str, list[int | float | None]],
    steps: Sequence[int],
    files: Sequence[Path] = (),
) -> None:
    # wandb-core reports its own errors to W&B unless told not to; read at service start.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import wandb

    log_dir = project_root() / RUNS.parent  # wandb adds its own "wandb/" folder
    log_dir.mkdir(parents=True, exist_ok=True)
    init_kwargs: dict[str, Any] = {
        "project": os.environ.get(ENV_PROJECT, "").strip() or DEFAULT_PROJECT,
        "group": run_group(),
        "job_type": os.environ.get(ENV_RULE, "").strip() or stage,
        "name": f"{stage}:{run_name}" if run_name else stage,
        "config": config,
        "tags": tags or None,
        "dir": str(log_dir),
        "reinit": "create_new",
    }
    try:
        run = wandb.init(settings=_settings(mode), **init_kwargs)
    except Exception as exc:
        if mode != "online":
            raise CircuitlabError(
                f"stage {stage!r}: W&B could not start an {mode} run in {log_dir}: {exc}. "
                "Set WANDB_MODE=disabled to skip W&B (the metrics JSON is already written)."
            ) from exc
        warnings.warn(
            f"W&B online run failed to start ({type(exc).__name__}: {exc}); logging offline.",
            TrackingWarning,
            stacklevel=3,
        )
        run = wandb.init(settings=_settings("offline"), **init_kwargs)

    exit_code = 1
    try:
        for i, step in enumerate(steps):
            run.log({n: v[i] for n, v in series.items() if i < len(v)}, step=step)
        if summary:
            run.summary.update(summary)
        for f in files:  # a copy, not `run.save`'s link: the run keeps this version
            shutil.copy2(f, Path(run.dir) / Path(f).name)
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)


def keep_runs(root: Path = Path(".")) -> list[str]:
    """Copy the offline W&B runs (``logs/wandb/offline-run-*``) not yet kept, or changed since,
    into ``data/wandb/``, so `make snapshot` versions them with the artifacts (DVC) and a
    checkout of any snapshot carries the history up to it; the runs copied. Files only (W&B's
    ``latest-run`` and log links are left out); the live runs are never touched."""
    source, dest = root / RUNS, root / KEPT
    copied = []
    for run in sorted(source.glob("offline-run-*")) if source.is_dir() else []:
        if not run.is_dir() or run.is_symlink():
            continue
        files = [f for f in sorted(run.rglob("*")) if f.is_file() and not f.is_symlink()]
        target = dest / run.name
        fresh = [f for f in files if file_stamp(target / f.relative_to(run)) != file_stamp(f)]
        for f in fresh:
            out = target / f.relative_to(run)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out)
        if fresh:
            copied.append(run.name)
    return copied
