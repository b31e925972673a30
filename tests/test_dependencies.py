"""`pyproject.toml` declares only what the project uses: every runtime dependency is imported
by the package, its tests or its workflow (or is a tool the Makefile runs)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: distribution name → import name, where they differ
IMPORT_NAMES = {"transformer-lens": "transformer_lens", "pyyaml": "yaml", "scikit-learn": "sklearn"}
#: run as programs (by the Makefile and the Snakefile's jobs), not imported
TOOLS = {"dvc": "make snapshot runs `dvc`"}


def test_every_declared_dependency_is_used() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in deps]
    code = "\n".join(
        p.read_text(encoding="utf-8")
        for pattern in ("src/**/*.py", "tests/**/*.py", "workflow/**/*.smk", "Snakefile")
        for p in ROOT.glob(pattern)
    )
    unused = []
    for name in names:
        if name in TOOLS:
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        if not re.search(rf"^\s*(import|from) {re.escape(module)}\b", code, re.MULTILINE):
            unused.append(name)
    assert not unused, f"declared but never imported: {unused} (drop them from pyproject.toml)"
