"""A snapshot carries what made its artifacts, so restoring it leaves nothing to do.

What decides whether a finished job is current lives outside ``data/``: Snakemake's metadata
(``.snakemake/metadata/``: the params, code fingerprint and shell command each output was made
with, its input checksums and end time) and circuitlab's output records
(``.snakemake/circuitlab/outputs/``: the sha256 of what each job wrote,
`circuitlab.provenance.manifest`). DVC versions ``data/`` only, so after ``dvc checkout`` of an
older snapshot (or ``dvc pull`` in a fresh clone) the files are that snapshot's while that
state is another run's, or absent: Snakemake saw every checked-out file as new (74 jobs
planned in a fresh clone) and the guard saw every file as edited.

`save_state` (``make snapshot``, before ``dvc add``) copies that state for every output whose
files are as their job wrote them into ``data/state/``, so it is versioned with the artifacts
it describes. `restore_state` (the rebuild guard, before every run or dry run) adopts the
snapshot's state for each output whose files on disk are byte-identical to what the snapshot
recorded and whose live record says otherwise: its record and metadata become the live ones
and its files get back the modification times they had when the snapshot was taken (DVC writes
files in any order, which Snakemake's mtime trigger would read as inputs newer than outputs);
so do the job files no record covers (Snakemake's benchmark TSVs, which the report reads) when
their bytes are the snapshot's. A file that matches neither the snapshot nor the live record
was edited by hand and is left to the guard, which rebuilds it; an output the live state
already describes is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
from base64 import urlsafe_b64decode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitlab.provenance.manifest import RECORDS, entries, sha256

#: the snapshot's copy of the state, versioned with data/ (`make snapshot`)
STATE = Path("data/state")
#: Snakemake's metadata folder (its default, file-based persistence)
METADATA = Path(".snakemake/metadata")
#: where `make snapshot` keeps a copy of the offline W&B runs (circuitlab.tracking.history)
WANDB = Path("data/wandb")


@dataclass(frozen=True)
class Saved:
    outputs: int  # outputs whose state was saved
    metadata: int  # Snakemake metadata files saved with them
    files: int  # files under data/ whose bytes and modification time were saved
    skipped: tuple[str, ...]  # outputs left out: changed since their job wrote them


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
    """Write ``data/state/`` anew: the record and Snakemake metadata of every output under
    ``data/`` whose files are as their job wrote them (an output edited since is left out and
    named in `Saved.skipped`), and the sha256 and modification time of every artifact file."""
    state = root / STATE
    tmp = state.with_name(f".{state.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    metadata = _metadata_index(root / METADATA)
    n_outputs = n_metadata = 0
    skipped = []
    for record, entry in entries(root):
        if not entry["output"].startswith("data/"):
            continue
        if not _matches(entry["files"], root):
            skipped.append(entry["output"])
            continue
        _copy(record, tmp / "records" / record.name)
        n_outputs += 1
        for rel in entry["files"]:
            if rel in metadata:
                _copy(metadata[rel], tmp / "metadata" / metadata[rel].relative_to(root / METADATA))
                n_metadata += 1
    files = {
        rel: {"sha256": sha256(root / rel), "mtime_ns": (root / rel).stat().st_mtime_ns}
        for rel in _artifact_files(root)
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "files.json").write_text(json.dumps(files, indent=0, sort_keys=True), encoding="utf-8")
    shutil.rmtree(state, ignore_errors=True)
    os.replace(tmp, state)
    return Saved(n_outputs, n_metadata, len(files), tuple(skipped))


def restore_state(root: Path = Path(".")) -> list[str]:
    """Adopt the snapshot's state (``data/state/``) for each output whose files on disk are the
    snapshot's and whose live record differs or is missing, and give those files and the
    unrecorded ones (benchmark TSVs) whose bytes are the snapshot's their snapshot-time
    modification times; the outputs adopted. A snapshot output whose files differ and which
    has no live record gets the snapshot's record only, so the guard sees the edit and
    rebuilds it."""
    state = root / STATE
    if not (state / "records").is_dir():
        return []
    metadata = _metadata_index(state / "metadata")
    try:
        times = json.loads((state / "files.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        times = {}
    adopted: list[str] = []
    recorded: set[str] = set()
    for record in sorted((state / "records").glob("*.json")):
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            files = dict(saved["files"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged snapshot record restores nothing; it never stops a run
        recorded.update(files)
        live = root / RECORDS / record.name
        try:
            if json.loads(live.read_text(encoding="utf-8")) == saved:
                continue  # the live state already says this
        except (OSError, ValueError):
            pass
        if not _matches(files, root):
            if not live.exists():
                _copy(record, live)
            continue
        for rel in files:
            if rel in metadata:
                _copy(
                    metadata[rel], root / METADATA / metadata[rel].relative_to(state / "metadata")
                )
            _set_time(root / rel, times.get(rel))
        _copy(record, live)
        adopted.append(saved["output"])
    for rel, saved_file in times.items():  # benchmark TSVs and other files no record covers
        path = root / rel
        if rel in recorded or not isinstance(saved_file, dict) or not path.is_file():
            continue
        if path.stat().st_mtime_ns != saved_file.get("mtime_ns") and _matches(
            {rel: saved_file.get("sha256", "")}, root
        ):
            _set_time(path, saved_file)
    return adopted


def _set_time(path: Path, saved_file: Any) -> None:
    mtime = saved_file.get("mtime_ns") if isinstance(saved_file, dict) else None
    if isinstance(mtime, int):
        os.utime(path, ns=(mtime, mtime))


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
