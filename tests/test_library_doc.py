"""docs/library.md runs as written: its Python blocks, executed in order in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_library_guide_runs_as_written(capsys) -> None:  # type: ignore[no-untyped-def]
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "library_doc"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # the failing block, not only a traceback into exec
            raise AssertionError(f"docs/library.md block {i} failed:\n{block}") from exc
    out = capsys.readouterr().out
    assert "edges kept" in out and "the closest call" in out and "logit diff" in out
    assert "TransformerLens vs circuitlab, circuit logits:" in out
    gap = float(out.split("TransformerLens vs circuitlab, circuit logits:")[1].split()[0])
    assert gap < 1e-4  # the two tools agree on the exported circuit
