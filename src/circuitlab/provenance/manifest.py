"""Artifacts changed by hand: each pipeline job records the sha256 of what it wrote, so a file
edited or deleted afterwards is found and rebuilt.

Snakemake reruns a job whose output is missing or older than its inputs, but not one whose
output was edited in place (a dataset row fixed by hand, a model file overwritten): the edit is
newer than everything. Every `circuitlab` stage run by the pipeline (``CIRCUITLAB_ROOT`` set)
records its outputs in ``.snakemake/circuitlab/outputs/`` (one small file per output, so
parallel jobs never write the same file); `altered` compares them with what is on disk;
`make reproduce` passes the altered ones to Snakemake's ``--forcerun`` and `make plan` lists
them. Files inside a directory output (the toy model) are recorded one by one, and rebuilding
one means rebuilding the directory's declared file (``model.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: where the records live, under the project root
RECORDS = Path(".snakemake/circuitlab/outputs")
ENV_ROOT = "CIRCUITLAB_ROOT"
#: a directory output is rebuilt through this file of it (a declared output of its rule)
DIRECTORY_TARGET = "model.safetensors"


@dataclass(frozen=True)
class Altered:
    path: str  # the file that changed (relative to the root)
    why: str  # "deleted" or "edited"
    target: str  # what to pass to --forcerun


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_file(root: Path) -> Path:
    return root / RECORDS


def record_outputs(paths: Iterable[Path], root: Path | None = None) -> None:
    """Record each output's files and hashes (pipeline jobs only: ``CIRCUITLAB_ROOT`` set)."""
    if root is None:
        env = os.environ.get(ENV_ROOT)
        if not env:
            return
        root = Path(env)
    folder = _record_file(root)
    for path in paths:
        path = Path(path).absolute()
        if not path.exists():
            continue
        try:
            rel = path.relative_to(root.absolute())
        except ValueError:
            continue  # written outside the project: nothing to guard
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            target = str(rel / DIRECTORY_TARGET)
        else:
            files, target = [path], str(rel)
        entry = {
            "target": target,
            "files": {str(f.relative_to(root.absolute())): sha256(f) for f in files},
        }
        folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(str(rel).encode()).hexdigest()[:24] + ".json"
        tmp = folder / f".{name}.tmp"
        tmp.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
        os.replace(tmp, folder / name)


def altered(root: Path = Path(".")) -> list[Altered]:
    """Recorded outputs that are now missing or differ from what their job wrote."""
    out: list[Altered] = []
    folder = _record_file(root)
    if not folder.is_dir():
        return out
    for record in sorted(folder.glob("*.json")):
        try:
            entry = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for rel, digest in sorted(entry["files"].items()):
            path = root / rel
            if not path.exists():
                # a missing declared output is Snakemake's own business (it reruns the job);
                # a missing file inside a directory output is not seen by it
                if rel != entry["target"]:
                    out.append(Altered(rel, "deleted", entry["target"]))
            elif sha256(path) != digest:
                out.append(Altered(rel, "edited", entry["target"]))
    return out


def forcerun_targets(changes: Iterable[Altered]) -> list[str]:
    return sorted({c.target for c in changes})
