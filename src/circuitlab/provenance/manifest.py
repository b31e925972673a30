"""Artifacts changed by hand: each pipeline job records the sha256 of what it wrote, so a file
edited or deleted afterwards is found and rebuilt in the next run, and the edit is kept.

Snakemake reruns a job whose output is missing or older than its inputs, but not one whose
output was edited in place (a dataset row fixed by hand, a model file overwritten): the edit is
newer than everything. Every `circuitlab` stage run by the pipeline (``CIRCUITLAB_RECORD``,
set by the workflow) records its outputs in ``.snakemake/circuitlab/outputs/`` (one small file
per output, so parallel jobs never write the same file). Before a run, the Snakefile asks
`repairs` which recorded outputs of this run's job graph were edited or deleted and adds them
to Snakemake's ``--forcerun``: they become targets of that very run, their jobs rerun (with
what depends on them), and `make plan`'s dry run lists exactly those jobs. Nothing is moved:
an edited file is copied to ``.snakemake/circuitlab/edited/<sha256[:12]>/<path>``
(`keep_edits`) and stays in place until its job rewrites it, so a run that stops early loses
nothing and the next one repairs it. A recorded output that is not part of this run's graph
(an overlay config without its task, say) is named and left as it is. `make accept` records
what is on disk now as current (`accept`); a `dvc checkout` of a snapshot needs none
(`circuitlab.provenance.state` restores the snapshot's records with it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from circuitlab.io import file_hash

#: where the records live, under the project root
RECORDS = Path(".snakemake/circuitlab/outputs")
EDITED = Path(".snakemake/circuitlab/edited")
#: set by the workflow for its jobs: only pipeline jobs record what they wrote
ENV_RECORD = "CIRCUITLAB_RECORD"


@dataclass(frozen=True)
class Altered:
    path: str  # the file that changed (relative to the root)
    why: str  # "deleted" or "edited"


def sha256(path: Path) -> str:
    return file_hash(path, "sha256")


def record_outputs(paths: Iterable[Path], root: Path | None = None) -> None:
    """Record each output's files and hashes (pipeline jobs only: ``CIRCUITLAB_RECORD`` set to
    the project root, unless ``root`` is given)."""
    if root is None:
        env = os.environ.get(ENV_RECORD)
        if not env:
            return
        root = Path(env)
    for path in paths:
        _record(Path(path).absolute(), root.absolute())


def _record(path: Path, root: Path) -> None:
    if not path.exists():
        return
    try:
        rel = path.relative_to(root)
    except ValueError:
        return  # written outside the project: nothing to guard
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    entry = {
        "output": str(rel),
        "files": {str(f.relative_to(root)): sha256(f) for f in files},
        # when the job left each file: one untouched since needs no rehash to restore a
        # snapshot (circuitlab.provenance.state)
        "mtimes": {str(f.relative_to(root)): f.stat().st_mtime_ns for f in files},
    }
    folder = root / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(rel).encode()).hexdigest()[:24] + ".json"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / name)


def entries(root: Path) -> list[tuple[Path, dict]]:
    out = []
    for record in sorted((root / RECORDS).glob("*.json")):
        try:
            entry = json.loads(record.read_text(encoding="utf-8"))
            if isinstance(entry.get("files"), dict) and isinstance(entry.get("output"), str):
                out.append((record, entry))
        except (OSError, ValueError, AttributeError):
            continue  # a damaged record guards nothing; it never stops a run
    return out


def altered(root: Path = Path(".")) -> list[Altered]:
    """Recorded outputs that now differ from what their job wrote: ``edited`` (other bytes),
    ``deleted`` (gone) or ``unreadable``."""
    out: list[Altered] = []
    for _, entry in entries(root):
        for rel, digest in sorted(entry["files"].items()):
            path = root / rel
            try:
                if not path.exists():
                    out.append(Altered(rel, "deleted"))
                elif sha256(path) != digest:
                    out.append(Altered(rel, "edited"))
            except OSError:
                out.append(Altered(rel, "unreadable"))
    return out


@dataclass(frozen=True)
class Repairs:
    """What the next run does about altered outputs: `forced` are outputs of its job graph
    (their jobs rerun in that run); `outside` are not (no job of this config writes them: they
    are named and left as they are)."""

    forced: tuple[Altered, ...]
    outside: tuple[Altered, ...]


def repairs(changes: Iterable[Altered], outputs: Iterable[str]) -> Repairs:
    """Split `changes` by whether a job of the run's graph declares them (`outputs`: every
    output file of every job, relative to the root)."""
    declared = {os.path.normpath(p) for p in outputs}
    changes = list(changes)
    return Repairs(
        forced=tuple(c for c in changes if os.path.normpath(c.path) in declared),
        outside=tuple(c for c in changes if os.path.normpath(c.path) not in declared),
    )


def keep_edits(changes: Iterable[Altered], root: Path = Path(".")) -> list[Path]:
    """Copy each edited file to ``.snakemake/circuitlab/edited/<sha256[:12]>/<path>`` (the
    original stays where it is until its job rewrites it); the same edit is kept once. Returns
    where each one is kept."""
    kept = []
    for c in changes:
        src = root / c.path
        if c.why != "edited" or not src.is_file():
            continue
        dest = root / EDITED / sha256(src)[:12] / c.path
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, dest)
        kept.append(dest)
    return kept


def accept(root: Path = Path(".")) -> int:
    """Record what is on disk now as what each output's job wrote (`make accept`); the number
    of outputs re-recorded."""
    n = 0
    for record, entry in entries(root):
        output = root / entry["output"]
        if output.exists():
            _record(output.absolute(), root.absolute())
            n += 1
        else:
            record.unlink(missing_ok=True)
    return n
