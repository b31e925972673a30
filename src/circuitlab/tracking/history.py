"""`make history`: the recorded runs side by side, in one terminal screen.

A recorded run is a DVC snapshot (`make snapshot`, then a git commit): the commits that change
a ``data/*.dvc`` pointer, newest last, plus the workspace when its results or params differ
from the newest snapshot's. For each, the headline results (`ROWS`: accuracy per task, LRP
circuit faithfulness area, ACDC's edge recovery, the steering verdicts), read from the
snapshot's ``data/summary/`` through DVC (`dvc.api.DVCFileSystem`: the local cache, or the
remote when the cache lacks a file), and its params (``config/resolved.yaml`` at that commit:
every key, defaults included); then the params that changed between consecutive columns.

`dvc exp show` has every column (6,000 in the default run) and `dvc exp show -n 2
--only-changed` the changed ones; this is the short view a researcher reads first.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from circuitlab.errors import CircuitlabError

#: (row label, summary file under data/summary/ with {model} {task} wildcards, column)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "evaluate_model/{model}/{task}.json", "test_accuracy"),
    ("LRP faithfulness area", "lrp_faithfulness/{model}/{task}.json", "area_mean"),
    ("ACDC edge recovery", "acdc_evaluate/{model}/{task}.json", "acdc_recovery"),
    ("steering: suppress beats control", "steering/{model}/summary.json", "suppress_beat"),
    ("steering: amplify beats control", "steering/{model}/summary.json", "amplify_beat"),
)
SUMMARY = "data/summary"
PARAMS = "config/resolved.yaml"
WIDTH = 100


@dataclass
class Snapshot:
    """One column: a snapshot commit or the workspace."""

    label: str  # short commit or "workspace"
    subject: str = ""
    date: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # flattened, "a.b.c" keys
    values: dict[str, Any] = field(default_factory=dict)  # row label → value


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{model\}|\{task\})", template)
    regex = "".join(
        f"(?P<{p[1:-1]}>[^/]+)" if p in ("{model}", "{task}") else re.escape(p) for p in parts
    )
    return re.compile(regex + "$")


def headline_values(files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The `ROWS` found in summary files (path under data/summary/ → its values): row label
    ``model/task what`` (``model what`` for a model-wide row) → value."""
    out: dict[str, Any] = {}
    for label, template, column in ROWS:
        pattern = _pattern(template)
        for path in sorted(files):
            m = pattern.match(path)
            if m is None or column not in files[path]:
                continue
            where = "/".join(
                v for v in (m.groupdict().get("model"), m.groupdict().get("task")) if v
            )
            out[f"{where} {label}"] = files[path][column]
    return out


def flatten_params(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as ``a.b.c`` keys (lists kept whole), as `dvc params diff` names them."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _show(value: Any, width: int = 12) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def render(snapshots: Sequence[Snapshot], width: int = WIDTH, every: bool = False) -> str:
    """The history table: the columns, the params changed between consecutive columns, then
    the headline rows: those of the first model of the newest column's config and every row
    that changed (marked ``*``); every row with `every`."""
    col = 11
    fit = max(1, (width - 28) // col)  # a row label of at least 28 characters
    dropped = len(snapshots) - fit
    snapshots = list(snapshots)[-fit:]
    if not snapshots:
        return (
            "no snapshots and no results yet: `make reproduce`, then `make snapshot` and a git "
            "commit record one (README, 'History: metrics, parameters and runs')\n"
        )
    lines = ["recorded runs (oldest left):"]
    if dropped > 0:
        lines.append(f"  ({dropped} older not shown: {fit} columns fit {width} characters)")
    lines += [f"  {s.label:<9} {s.date:<10} {s.subject}"[:width] for s in snapshots]
    lines += ["", "params changed:"]
    changed = [
        f"  {before.label} → {after.label}  {k}: "
        f"{_show(before.params.get(k), 24)} → {_show(after.params.get(k), 24)}"[:width]
        for before, after in pairwise(snapshots)
        for k in sorted(before.params.keys() | after.params.keys())
        if before.params.get(k) != after.params.get(k)
    ]
    lines += changed or ["  none"]
    models = [  # the models the newest column's config runs (a null model is switched off)
        k.split(".")[1]
        for k, v in snapshots[-1].params.items()
        if k.startswith("models.") and k.count(".") >= 2 and v is not None
    ]
    models = list(dict.fromkeys(models))
    models = models or sorted(
        re.split(r"[/ ]", r, maxsplit=1)[0] for s in snapshots for r in s.values
    )
    first = models[0] if models else ""
    shown = []
    for row in sorted({r for s in snapshots for r in s.values}, key=_row_order):
        values = [s.values.get(row) for s in snapshots]
        moved = len({json.dumps(v) for v in values}) > 1
        if every or moved or row.startswith((f"{first}/", f"{first} ")):
            shown.append((row + ("*" if moved else ""), values))
    hidden = len({r for s in snapshots for r in s.values}) - len(shown)
    label_width = min(max((len(r) for r, _ in shown), default=10) + 2, width - col * len(snapshots))
    label_width = max(label_width, 12)
    lines += ["", (" " * label_width + "".join(f"{s.label[: col - 1]:>{col}}" for s in snapshots))]
    for row, values in shown:
        name = row if len(row) < label_width - 1 else row[: label_width - 2] + "…"
        lines.append(
            f"{name:<{label_width}}" + "".join(f"{_show(v, col - 1):>{col}}" for v in values)
        )
    lines.append("")
    if hidden:
        lines.append(f"{hidden} unchanged rows of other models not shown (--all shows them).")
    lines.append("* changed between columns. Every metric: `dvc exp show -n 2 --only-changed`;")
    lines.append("one stage in full: `dvc metrics diff HEAD~1 --targets data/metrics/<stage>`")
    return "\n".join(lines) + "\n"


def _row_order(row: str) -> tuple[int, str]:
    for i, (label, _, _) in enumerate(ROWS):
        if row.endswith(" " + label):
            return i, row
    return len(ROWS), row


# ---------------------------------------------------------------------------- reading


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CircuitlabError(f"`git {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def snapshot_commits(root: Path, n: int) -> list[tuple[str, str, str]]:
    """The `n` newest commits that change a ``data/*.dvc`` pointer: (sha, date, subject),
    oldest first."""
    out = _git(
        root, "log", f"-n{n}", "--format=%H%x09%cs%x09%s", "--", "data/*.dvc",
        ":(exclude)data/wandb.dvc",  # a commit that only adds W&B runs is no new result
    )  # fmt: skip
    rows = [tuple(line.split("\t", 2)) for line in out.splitlines() if line.strip()]
    return [(r[0], r[1], r[2] if len(r) > 2 else "") for r in reversed(rows)]


def _wanted(paths: Iterable[str]) -> list[str]:
    patterns = [_pattern(t) for _, t, _ in ROWS]
    return [p for p in paths if any(pat.match(p) for pat in patterns)]


def read_commit(root: Path, sha: str, date: str, subject: str) -> Snapshot:
    """A snapshot commit's params (git) and headline values (DVC)."""
    from dvc.api import DVCFileSystem

    snap = Snapshot(label=sha[:7], subject=subject, date=date)
    for path in (PARAMS, "config/config.yaml"):  # a snapshot older than the resolved file
        try:
            snap.params = flatten_params(yaml.safe_load(_git(root, "show", f"{sha}:{path}")) or {})
            break
        except (CircuitlabError, yaml.YAMLError):
            continue
    files = {}
    try:
        fs = DVCFileSystem(str(root), rev=sha)
        found = [str(p).lstrip("/") for p in fs.find(SUMMARY, detail=False)]
        rel = {p[len(SUMMARY) + 1 :]: p for p in found if p.startswith(SUMMARY + "/")}
        for short in _wanted(rel):
            files[short] = json.loads(fs.read_text(rel[short]))
    except Exception as exc:  # DVC's errors vary by version: say it, show the others
        snap.subject = f"{subject} [results unreadable: {type(exc).__name__}; `dvc fetch`?]"
    snap.values = headline_values(files)
    return snap


def read_workspace(root: Path) -> Snapshot:
    """The workspace's params file and headline values."""
    snap = Snapshot(label="workspace", subject="(not snapshotted)")
    params = root / PARAMS
    if params.is_file():
        snap.params = flatten_params(yaml.safe_load(params.read_text(encoding="utf-8")) or {})
    base = root / SUMMARY
    files = {}
    if base.is_dir():
        paths = [p.relative_to(base).as_posix() for p in base.rglob("*.json")]
        for short in _wanted(paths):
            try:
                files[short] = json.loads((base / short).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a damaged summary shows as "–"
    snap.values = headline_values(files)
    return snap


def history(root: Path = Path("."), n: int = 3) -> list[Snapshot]:
    """The last `n` snapshots, oldest first, and the workspace when it differs from the
    newest of them."""
    if n < 1:
        raise CircuitlabError(f"-n must be at least 1, got {n}")
    if not (root / ".dvc").is_dir():
        raise CircuitlabError(f"{root.resolve()} is not a DVC project (no .dvc/ folder)")
    snaps = [read_commit(root, *c) for c in snapshot_commits(root, n)]
    work = read_workspace(root)
    differs = not snaps or (work.values, work.params) != (snaps[-1].values, snaps[-1].params)
    if differs and work.values:
        snaps.append(work)
    return snaps
