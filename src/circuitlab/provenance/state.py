"""A snapshot carries what made its artifacts, so restoring it leaves nothing to do.

What decides whether a finished job is current lives outside ``data/``: Snakemake's metadata
(``.snakemake/metadata/``: the params, code fingerprint and shell command each output was made
with, its input checksums) and circuitlab's output records (``.snakemake/circuitlab/outputs/``:
the sha256 and modification time of what each job wrote, `circuitlab.provenance.manifest`).
DVC versions ``data/`` only, so after ``dvc checkout`` of an older snapshot (or ``dvc pull`` in
a fresh clone) the files are that snapshot's while that state is another run's, or absent:
Snakemake saw every checked-out file as new (74 jobs planned in a fresh clone) and the guard
saw every file as edited.

`save_state` (``make snapshot``, before ``dvc add``) writes that state into ``data/state/``, so
it is versioned with the artifacts it describes: the record and metadata of every output as
its job wrote it, with the files' modification times; the record alone of an output edited
since (a clone then sees the edit and rebuilds it); the sha256 and time of the job files no
record covers (Snakemake's benchmark TSVs, which the report reads).

`restore_state` (the rebuild guard, before every run or dry run) adopts the snapshot's state —
record, metadata, modification times (DVC writes files in any order, which Snakemake's mtime
trigger would read as inputs newer than outputs) — for each output whose bytes on disk are the
snapshot's:

* for every such output when ``data/state/`` is new to this workspace (a ``dvc checkout`` or
  ``dvc pull`` brought another snapshot's state, or ``make snapshot`` wrote one), so an output
  whose bytes two snapshots share gets the checked-out snapshot's params and code too;
* otherwise only for an output that something other than its job rewrote since its live record
  (its modification time is not the recorded one: a pull completed later, say), so a job that
  reran with identical bytes keeps its own, newer state.

A file that matches neither the snapshot nor its live record was edited by hand and is left to
the guard, which rebuilds it. A state folder that the checkout does not track
(``data/state.dvc`` absent: a commit from before snapshots carried one) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from base64 import urlsafe_b64decode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitlab.errors import CircuitlabError
from circuitlab.provenance.manifest import RECORDS, entries, sha256

#: the snapshot's copy of the state, versioned with data/ (`make snapshot`)
STATE = Path("data/state")
#: Snakemake's metadata folder (its default, file-based persistence)
METADATA = Path(".snakemake/metadata")
#: where `make snapshot` keeps a copy of the offline W&B runs (circuitlab.tracking.wandb_run)
WANDB = Path("data/wandb")
#: the digest of the last snapshot state this workspace restored or saw
SEEN = Path(".snakemake/circuitlab/state-seen")


@dataclass(frozen=True)
class Saved:
    outputs: int  # outputs whose state was saved
    metadata: int  # Snakemake metadata files saved with them
    files: int  # job files no record covers, saved with their sha256 and time
    skipped: tuple[str, ...]  # outputs changed since their job wrote them: record only


def _metadata_index(folder: Path) -> dict[str, Path]:
    """Snakemake's metadata files by the output path they describe (file names are the
    url-safe base64 of the path, split into ``@``-prefixed folders when too long)."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        parts = path.relative_to(folder).parts
        encoded = "".join(p[1:] if p.startswith("@") else p for p in parts)
        try:
            index[urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()] = path
        except (ValueError, UnicodeDecodeError):
            continue
    return index


def _matches(files: dict[str, str], root: Path) -> bool:
    """Whether every file is on disk with the given sha256."""
    try:
        return all((root / rel).is_file() and sha256(root / rel) == d for rel, d in files.items())
    except OSError:
        return False


def _untouched(entry: dict[str, Any], root: Path) -> bool:
    """Whether every file of a live record still has the modification time its job left."""
    times = entry.get("mtimes")
    if not isinstance(times, dict):
        return False
    try:
        return all((root / rel).stat().st_mtime_ns == times.get(rel) for rel in entry["files"])
    except OSError:
        return False


def _artifact_files(root: Path) -> list[str]:
    """Every file in a folder under ``data/`` but the state itself and kept W&B runs."""
    data = root / "data"
    skip = {STATE.name, WANDB.name}
    folders = [
        p
        for p in sorted(data.iterdir())
        if p.is_dir() and p.name not in skip and not p.name.startswith(".")
    ]
    return [
        f.relative_to(root).as_posix()
        for folder in folders
        for f in sorted(folder.rglob("*"))
        if f.is_file() and not f.is_symlink()
    ]


def save_state(root: Path = Path(".")) -> Saved:
    """Write ``data/state/`` anew (see the module): the state of every output under ``data/``
    and the times of the files no record covers."""
    if not (root / "data").is_dir():
        raise CircuitlabError(f"no data/ folder in {root.resolve()}: nothing to snapshot")
    state = root / STATE
    tmp = state.with_name(f".{state.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    metadata = _metadata_index(root / METADATA)
    n_outputs = n_metadata = 0
    skipped = []
    covered: set[str] = set()
    for record, entry in entries(root):
        if not entry["output"].startswith("data/"):
            continue
        covered.update(entry["files"])
        dest = tmp / "records" / record.name
        if not _matches(entry["files"], root):  # edited since: the clone must rebuild it
            skipped.append(entry["output"])
            _write_json(dest, entry)
            continue
        times = {rel: (root / rel).stat().st_mtime_ns for rel in entry["files"]}
        _write_json(dest, {**entry, "mtimes": times})
        n_outputs += 1
        for rel in entry["files"]:
            if rel in metadata:
                _copy(metadata[rel], tmp / "metadata" / metadata[rel].relative_to(root / METADATA))
                n_metadata += 1
    files = {
        rel: {"sha256": sha256(root / rel), "mtime_ns": (root / rel).stat().st_mtime_ns}
        for rel in _artifact_files(root)
        if rel not in covered
    }
    _write_json(tmp / "files.json", files)
    shutil.rmtree(state, ignore_errors=True)
    os.replace(tmp, state)
    return Saved(n_outputs, n_metadata, len(files), tuple(skipped))


def _digest(state: Path) -> str:
    """The content of a state folder, as one hash (has the workspace seen this state?)."""
    h = hashlib.sha256()
    for f in sorted(p for p in state.rglob("*") if p.is_file()):
        h.update(f.relative_to(state).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def restore_state(root: Path = Path(".")) -> list[str]:
    """Adopt the snapshot's state for the outputs whose bytes are the snapshot's (see the
    module); the outputs adopted. A snapshot output whose files differ and which has no live
    record gets the snapshot's record only, so the guard sees the edit and rebuilds it."""
    state = root / STATE
    if not (state / "records").is_dir() or not (root / "data" / "state.dvc").is_file():
        return []
    digest = _digest(state)
    seen_file = root / SEEN
    fresh = not seen_file.is_file() or seen_file.read_text(encoding="utf-8").strip() != digest
    metadata = _metadata_index(state / "metadata")
    adopted: list[str] = []
    for record in sorted((state / "records").glob("*.json")):
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            files = dict(saved["files"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged snapshot record restores nothing; it never stops a run
        live_path = root / RECORDS / record.name
        try:
            live = json.loads(live_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            live = None
        if not fresh and live is not None and _untouched(live, root):
            continue  # as its job (or an earlier restore) left it
        if not _matches(files, root):
            if live is None:
                _copy(record, live_path)
            continue
        for rel in files:
            if rel in metadata:
                _copy(
                    metadata[rel], root / METADATA / metadata[rel].relative_to(state / "metadata")
                )
            mtime = (saved.get("mtimes") or {}).get(rel)
            if isinstance(mtime, int):
                os.utime(root / rel, ns=(mtime, mtime))
        _copy(record, live_path)
        adopted.append(saved["output"])
    try:
        times = json.loads((state / "files.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        times = {}
    for rel, saved_file in times.items():  # benchmark TSVs and other files no record covers
        path = root / rel
        mtime = saved_file.get("mtime_ns") if isinstance(saved_file, dict) else None
        if not isinstance(mtime, int) or not path.is_file() or path.stat().st_mtime_ns == mtime:
            continue
        if _matches({rel: saved_file.get("sha256", "")}, root):
            os.utime(path, ns=(mtime, mtime))
    seen_file.parent.mkdir(parents=True, exist_ok=True)
    seen_file.write_text(digest + "\n", encoding="utf-8")
    return adopted


def _write_json(dest: Path, value: Any) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(value, sort_keys=True), encoding="utf-8")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
