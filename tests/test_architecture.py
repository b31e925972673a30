"""The house rules a refactor must keep, checked on the package's static import graph.

- No import cycle: neither between modules (module-level imports, which run on import) nor
  between the package's parts (`acdc`, `lrp`, `models`, … with every import counted, also those
  inside functions), so the layers read top to bottom.
- A stage never reaches up: only the front ends (`cli`, `repl`, `watch`) import the CLI, the
  config assembler (`circuitlab.config`) or the metrics door (`circuitlab.tracking`); a stage
  receives its settings section and returns numbers.
- Each stage's settings live beside its code, and importing the whole config (the Snakefile
  does it on every invocation) imports no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.provenance.code import PACKAGE, CodeIndex, _raw_imports

SRC = Path(__file__).resolve().parents[1] / "src"
FRONT_ENDS = {"cli", "repl", "watch"}
UPWARD = {"cli", "config", "tracking", "repl", "watch"}


@pytest.fixture(scope="module")
def index() -> CodeIndex:
    return CodeIndex(SRC)


def part(module: str) -> str:
    """`circuitlab.acdc.fast` -> `acdc`; `circuitlab` -> `circuitlab`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_level_imports(index: CodeIndex, module: str) -> set[str]:
    """What importing ``module`` runs at once: its top-level imports (not those inside
    functions, not those under ``if TYPE_CHECKING:``), with the packages above each."""
    path = index.modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    # class bodies run on import too, but their methods do not
    nodes: list[ast.AST] = []
    for n in top:
        if isinstance(n, ast.ClassDef):
            nodes.extend(b for b in n.body if not isinstance(b, ast.FunctionDef))
        else:
            nodes.append(n)
    found = index._resolve(_raw_imports(module, path.name == "__init__.py", nodes))
    # a module's own packages have already started running when it is imported
    return {p for m in found for p in index._with_parents(m)} - set(index._with_parents(module))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_import_cycle(index: CodeIndex) -> None:
    graph = {m: module_level_imports(index, m) for m in index.modules}
    cycle = find_cycle(graph)
    assert cycle is None, "modules import each other on import: " + " -> ".join(cycle or [])


def test_no_cycle_between_parts(index: CodeIndex) -> None:
    graph: dict[str, set[str]] = {}
    for m in index.modules:
        for dep in index.imports_of(m):
            if part(dep) != part(m):
                graph.setdefault(part(m), set()).add(part(dep))
    cycle = find_cycle(graph)
    assert cycle is None, "the package's parts import each other: " + " -> ".join(cycle or [])


def test_stages_do_not_import_front_ends_config_or_tracking(index: CodeIndex) -> None:
    bad = sorted(
        f"{m} imports {dep}"
        for m in index.modules
        if part(m) not in FRONT_ENDS | {"config", "tracking"}
        for dep in index.imports_of(m)
        if part(dep) in UPWARD
    )
    assert not bad, "a stage reaches up:\n" + "\n".join(bad)


def test_each_stage_has_its_settings_beside_it(index: CodeIndex) -> None:
    """Every section of `Config` is defined in a `settings` module of its own part."""
    from circuitlab.config import Config

    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if name in {"seed", "models"}:
            continue
        # an optional section (`robustness: RobustnessConfig | None`): the class it holds
        args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
        module = (args[0] if args else annotation).__module__  # type: ignore[union-attr]
        assert module.startswith(PACKAGE) and module.endswith(".settings"), (name, module)


def test_the_config_imports_no_torch() -> None:
    code = (
        "import sys, circuitlab.config as c; c.load_config('config/config.yaml'); "
        "heavy = [m for m in ('torch', 'transformers', 'transformer_lens') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = SRC.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
