"""Tests leave the project as they found it: nothing a test runs writes into the project's
`logs/`, `data/`, `.snakemake/`, W&B folders or anywhere else in its tree.

`tests/conftest.py` lists the tree when the session starts and again when it ends (on the
controlling process under pytest-xdist) and fails the session, naming the paths, if the two
listings differ. A listing is every path under the root with, for a file, its size and
modification time, so a file rewritten in place counts too. Left out: version control, the
virtualenv and the caches Python and the tools keep for themselves (`IGNORED`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: folders that are not the project's content: version control, environments, tool caches
IGNORED = frozenset(
    {
        ".git",
        ".venv",
        "__pycache__",
        ".pytest_cache",
        ".ruff_cache",
        ".mypy_cache",
        ".hypothesis",
    }
)

Entry = tuple[str, int, int]  # path, size (-1 for a folder, -2 for a link), mtime in ns


def listing(root: Path, ignored: Iterable[str] = IGNORED) -> dict[str, Entry]:
    """Every path under `root` but the ignored folders (and ``*.egg-info``), by relative path."""
    skip = set(ignored)
    out: dict[str, Entry] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.endswith(".egg-info"))
        base = Path(folder)
        for name in [*dirs, *files]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if path.is_symlink():
                out[rel] = (rel, -2, st.st_mtime_ns)
            elif name in dirs:
                out[rel] = (rel, -1, 0)
            else:
                out[rel] = (rel, st.st_size, st.st_mtime_ns)
    return out


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What changed between two listings, one line per path (``+`` new, ``-`` gone, ``~``
    rewritten), sorted."""
    lines = [f"+ {p}" for p in after.keys() - before.keys()]
    lines += [f"- {p}" for p in before.keys() - after.keys()]
    lines += [f"~ {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(lines, key=lambda line: line[2:])
