"""Atomic artifact I/O: a killed job never leaves a half-written file behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from circuitlab.errors import ArtifactError, missing_artifact


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto `path` (file or directory).

    On any exception the temporary is removed and `path` is left untouched. Temporaries of
    this same artifact left by a writer that was killed (SIGKILL skips the cleanup) are removed
    first: only one job at a time writes a given artifact.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{glob_escape(final.name)}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise ArtifactError(f"nothing was written for {final}")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_hash(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in chunks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, None if it is absent: whether it was rewritten since."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Outputs:
    """A stage's outputs, all or nothing: each is noted (with its state on disk) when the stage
    declares it, and `discard_written` removes every one written since, so a stage that fails
    after writing some of its files leaves none (each file is itself written atomically, by
    `atomic_path`; this makes the set atomic). What was there before and is untouched stays."""

    def __init__(self) -> None:
        self._before: dict[Path, tuple[int, int] | None] = {}

    def add(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        self._before.setdefault(path, file_stamp(path))
        return path

    def clear(self) -> None:
        self._before.clear()

    def paths(self) -> list[Path]:
        return list(self._before)

    def __bool__(self) -> bool:
        return bool(self._before)

    def written(self) -> list[Path]:
        """The outputs created or changed since they were added."""
        return [p for p, before in self._before.items() if (now := file_stamp(p)) and now != before]

    def discard_written(self) -> list[Path]:
        """Remove every output created or changed since it was added; returns them."""
        gone = self.written()
        for path in gone:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return gone


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically with sorted keys so identical content gives identical bytes."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def check_writable(path: str | os.PathLike[str], *, directory: bool = False) -> Path:
    """An output path a stage can write: its nearest existing ancestor is a writable directory
    (the rest is created on write) and, unless the output is a ``directory``, the path is not
    one. Checked before a stage does any work, so a typo costs a second, not a run."""
    p = Path(path)
    if p.is_dir() and not directory:
        raise ArtifactError(f"output {p} is a directory; give a file path")
    if p.is_file() and directory:
        raise ArtifactError(f"output {p} is a file; give a directory path")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ArtifactError(f"cannot write output {p}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or _pseudo_filesystem(parent):
        raise ArtifactError(
            f"cannot write output {p}: {parent} is not writable by this user. Fix: give a path "
            "under a writable directory (the pipeline writes under data/)"
        )
    return p


def _pseudo_filesystem(path: Path) -> bool:
    """/proc and /sys look writable to root but refuse new files."""
    resolved = path.resolve()
    return any(resolved == Path(r) or Path(r) in resolved.parents for r in ("/proc", "/sys"))


def require(path: str | os.PathLike[str], rule: str | None = None) -> Path:
    """`path` as a Path if it exists; else an error naming the rule that makes it."""
    p = Path(path)
    if not p.exists():
        raise missing_artifact(p, rule) if rule else ArtifactError(f"{p} does not exist")
    return p


def read_json(path: str | os.PathLike[str], *, rule: str | None = None) -> Any:
    p = require(path, rule)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{p} is not valid JSON (line {exc.lineno}): {exc.msg}") from exc


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
    return write_text_atomic(path, text)


def read_jsonl(path: str | os.PathLike[str], *, rule: str | None = None) -> list[dict[str, Any]]:
    p = require(path, rule)
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{p}:{n} is not valid JSON: {exc.msg}") from exc
    return rows
