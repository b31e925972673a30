"""Artifacts changed by hand: each pipeline job records the sha256 of what it wrote, so a file
edited or deleted afterwards is found and rebuilt.

Snakemake reruns a job whose output is missing or older than its inputs, but not one whose
output was edited in place (a dataset row fixed by hand, a model file overwritten): the edit is
newer than everything. Every `circuitlab` stage run by the pipeline (``CIRCUITLAB_RECORD``,
set by the workflow) records its outputs in ``.snakemake/circuitlab/outputs/`` (one small file
per output, so parallel jobs never write the same file). Before a run, the Snakefile sets the
edited ones aside (`set_aside`: moved to ``.snakemake/circuitlab/edited/``, never deleted), so
they are missing and Snakemake rebuilds them and what depends on them, whatever the config and
targets of the run; dry runs and `make plan` only list them (`altered`). Files inside a
directory output (the toy model) are recorded one by one; a deleted declared output is
Snakemake's own business. `make accept` (after `dvc checkout`, say) records what is on disk
now as current (`accept`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    entry = {"output": str(rel), "files": {str(f.relative_to(root)): sha256(f) for f in files}}
    folder = root / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(rel).encode()).hexdigest()[:24] + ".json"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / name)


def _entries(root: Path) -> list[tuple[Path, dict]]:
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
    """Recorded outputs that now differ from what their job wrote (or, inside a directory
    output, are missing)."""
    out: list[Altered] = []
    for _, entry in _entries(root):
        for rel, digest in sorted(entry["files"].items()):
            path = root / rel
            try:
                if not path.exists():
                    if rel != entry["output"]:  # a declared output: Snakemake reruns it
                        out.append(Altered(rel, "deleted"))
                elif sha256(path) != digest:
                    out.append(Altered(rel, "edited"))
            except OSError:
                out.append(Altered(rel, "unreadable"))
    return out


def set_aside(changes: Iterable[Altered], root: Path = Path(".")) -> list[str]:
    """Move edited files to ``.snakemake/circuitlab/edited/<time>/<path>`` (kept, not deleted)
    so Snakemake sees them missing and rebuilds them; a directory output loses its declared
    file too. Returns what was moved."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for c in changes:
        targets = [c.path]
        parent = Path(c.path).parent
        if c.why == "deleted" and (root / parent / "model.safetensors").exists():
            targets = [str(parent / "model.safetensors")]  # rebuild the directory's job
        for rel in targets:
            src = root / rel
            if src.exists():
                dest = root / EDITED / stamp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dest)
                moved.append(rel)
    return moved


def accept(root: Path = Path(".")) -> int:
    """Record what is on disk now as what each output's job wrote (`make accept`, after
    `dvc checkout`); the number of outputs re-recorded."""
    n = 0
    for record, entry in _entries(root):
        output = root / entry["output"]
        if output.exists():
            _record(output.absolute(), root.absolute())
            n += 1
        else:
            record.unlink(missing_ok=True)
    return n
