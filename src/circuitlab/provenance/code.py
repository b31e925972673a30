"""Code fingerprints: which `circuitlab` code a pipeline job runs, hashed so that only a change
of behaviour changes the hash.

A job runs one CLI command (``circuitlab acdc-circuit …``). Its code is

* in the `circuitlab.cli` package: the command's function and the functions of its module it
  references by name, transitively; the module-level statements (and typer callbacks) of every
  CLI module, since the entry point imports them all to register the commands; and the whole
  of each CLI module that defines no command (`cli/app.py`, the shared options);
* every `circuitlab` module those import, anywhere in their bodies, transitively: the static
  import graph (``import a.b``, ``from a import b``, relative imports; importing a module also
  runs its packages' ``__init__``; a name a package re-exports lazily through its ``_WHERE``
  table, `circuitlab.lazy`, counts as an import of the module that defines it; imports under
  ``if TYPE_CHECKING:`` never run and do not count);
* *plugins*: modules a job selects by a wildcard and imports by name at run time (the module
  of an ACDC method), which the caller adds per job (`CodeIndex.fingerprint`).

Each module is hashed from its AST with docstrings removed, so comments, docstrings and
formatting change nothing, while any change of behaviour (a statement, a constant, a default,
an annotation) does. Nothing here imports torch or the rest of the package. The Snakefile
builds one `CodeIndex` per ``snakemake`` invocation; per-file results are cached on disk by
(size, mtime), so a no-op run re-parses only what was edited.

`tests/provenance/test_code.py` checks on a real pipeline run that every module a job loaded
is in its fingerprint, so an import the static graph cannot see (an ``importlib`` call that is
not a declared plugin) fails a test instead of leaving stale results.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

PACKAGE = "circuitlab"
CLI_PACKAGE = f"{PACKAGE}.cli"
#: The name a fingerprint's CLI digest is listed under (``cli:<command>``).
CLI_MODULE = CLI_PACKAGE
#: Code every job runs that records provenance but computes no result (this package: the
#: pins, the fingerprints, the record in each metrics file). It is not fingerprinted, so
#: improving it does not rerun the pipeline; the code it does run (e.g. the config for
#: `plugins_for`) is in every job's fingerprint through the job's own imports.
UNTRACKED = (f"{PACKAGE}.provenance",)
CACHE_VERSION = 2


def is_untracked(module: str) -> bool:
    return any(module == u or module.startswith(u + ".") for u in UNTRACKED)


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove the docstring of the module and of every class and function, in place."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised_dump(node: ast.AST) -> str:
    """The AST as text without positions: equal for sources that differ only in comments,
    docstrings or formatting."""
    return ast.dump(node, annotate_fields=False, include_attributes=False)


def digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _runtime_nodes(top: ast.AST) -> Iterator[ast.AST]:
    """`ast.walk`, skipping the body of ``if TYPE_CHECKING:`` (it never runs)."""
    stack = [top]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _raw_imports(module: str, is_package: bool, nodes: Iterable[ast.AST]) -> list[list[Any]]:
    """``[base, [names]]`` per import statement: ``import a.b`` -> ``["a.b", []]``;
    ``from x import n`` -> ``["x", ["n"]]`` with relative bases resolved."""
    out: list[list[Any]] = []
    for top in nodes:
        for node in _runtime_nodes(top):
            if isinstance(node, ast.Import):
                out.extend([a.name, []] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    base = node.module or ""
                else:
                    base = module if is_package else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{node.module}" if node.module else base
                out.append([base, [a.name for a in node.names]])
    return out


def _lazy_table(tree: ast.Module) -> dict[str, str] | None:
    """A package's ``_WHERE = {...}`` table (attribute -> module), if it has one."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "_WHERE" for t in targets):
            return dict(ast.literal_eval(node.value))  # type: ignore[union-attr]
    return None


@dataclass(frozen=True)
class Fingerprint:
    """The code of one job: the digest of each module it runs, and of its CLI command."""

    command: str
    modules: dict[str, str]  # module name -> 12-hex AST digest

    @property
    def digest(self) -> str:
        return digest(f"{m}={h}" for m, h in sorted(self.modules.items()))[:16]

    def param(self) -> str:
        """The value a rule passes as its ``code`` param: one ``module=hash`` token per module,
        sorted, so a dry run's 'params changed' reason shows which module changed."""
        return " ".join(
            f"{m.removeprefix(PACKAGE + '.')}={h}" for m, h in sorted(self.modules.items())
        )


def parse_param(value: str) -> dict[str, str]:
    """Inverse of `Fingerprint.param`: module (without the package prefix) -> hash."""
    return dict(token.partition("=")[::2] for token in value.split())


@dataclass
class CodeIndex:
    """The static import graph of the package under ``root`` (the folder holding
    ``circuitlab/``) and each module's AST digest. ``cache``: a JSON file that keeps per-module
    results between runs, keyed by file path, size and mtime (None: no cache)."""

    root: Path
    cache: Path | None = None
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def for_installed(cls, cache: Path | None = None) -> CodeIndex:
        """The index of the `circuitlab` package this interpreter would import (found without
        importing it)."""
        import importlib.util

        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"package {PACKAGE!r} is not importable")
        return cls(Path(next(iter(spec.submodule_search_locations))).parent, cache)

    # ------------------------------------------------------------------ modules on disk
    @cached_property
    def modules(self) -> dict[str, Path]:
        """Every module of the package: dotted name -> file."""
        out = {}
        for path in sorted((self.root / PACKAGE).rglob("*.py")):
            parts = list(path.relative_to(self.root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
        return out

    @cached_property
    def _disk_cache(self) -> dict[str, dict[str, Any]]:
        if self.cache is None or not self.cache.exists():
            return {}
        try:
            data = json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return {}
        return data.get("modules", {}) if data.get("version") == CACHE_VERSION else {}

    def save_cache(self) -> None:
        """Write the per-module records computed so far (atomically; best effort)."""
        if self.cache is None or not self._records:
            return
        fresh = {str(self.modules[name]): rec for name, rec in self._records.items()}
        records = {**self._disk_cache, **fresh}
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_name(f".{self.cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "modules": records}))
            os.replace(tmp, self.cache)
        except OSError:
            pass

    def record(self, name: str) -> dict[str, Any]:
        """``{"stamp", "hash", "imports", "where"}`` of one module, from the disk cache when
        the file's size and mtime are unchanged, else from a parse."""
        if name in self._records:
            return self._records[name]
        path = self.modules[name]
        st = path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        rec = self._disk_cache.get(str(path))
        if rec is None or rec.get("stamp") != stamp:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            is_package = path.name == "__init__.py"
            rec = {
                "stamp": stamp,
                "imports": _raw_imports(name, is_package, [tree]),
                "where": _lazy_table(tree) if is_package else None,
                "hash": digest([normalised_dump(strip_docstrings(tree))])[:12],
            }
        self._records[name] = rec
        return rec

    def module_hash(self, name: str) -> str:
        return self.record(name)["hash"]

    # ------------------------------------------------------------------ the import graph
    def _resolve(self, raw: list[list[Any]]) -> set[str]:
        found: set[str] = set()
        for base, names in raw:
            found.add(base)
            lazy = (self.record(base)["where"] or {}) if base in self.modules else {}
            for n in names:
                # `from pkg import sub` imports the submodule when `sub` is one, and a name a
                # package re-exports lazily imports the module that defines it
                found.add(f"{base}.{n}")
                if n in lazy:
                    found.add(lazy[n])
        return {m for m in found if m in self.modules}

    def imports_of(self, module: str) -> set[str]:
        """The package modules ``module`` imports anywhere in its body (a function-level
        import is as real as a top-level one)."""
        return self._resolve(self.record(module)["imports"])

    def _with_parents(self, name: str) -> Iterator[str]:
        """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            parent = ".".join(parts[:i])
            if parent in self.modules:
                yield parent

    def closure(self, roots: Iterable[str], skip: Iterable[str] = ()) -> set[str]:
        """Every package module that importing ``roots`` can run (`UNTRACKED` left out, and
        ``skip``: modules the caller accounts for itself, e.g. the CLI's)."""
        skip = set(skip)
        seen: set[str] = set(skip)
        stack = [p for r in roots for p in self._with_parents(r)]
        while stack:
            m = stack.pop()
            if m in seen or is_untracked(m):
                continue
            seen.add(m)
            for dep in self.imports_of(m):
                stack.extend(p for p in self._with_parents(dep) if p not in seen)
        return seen - skip

    # ------------------------------------------------------------------ CLI commands
    @cached_property
    def cli_modules(self) -> list[str]:
        """The modules of the `circuitlab.cli` package (the package itself first)."""
        return sorted(
            m for m in self.modules if m == CLI_PACKAGE or m.startswith(CLI_PACKAGE + ".")
        )

    @cached_property
    def _cli(self) -> dict[str, tuple[list[ast.stmt], list[ast.stmt]]]:
        """Per CLI module: its top-level statements with docstrings, and the same without (a
        second parse, statement for statement: the module docstring is dropped from both)."""
        out = {}
        for module in self.cli_modules:
            source = self.modules[module].read_text(encoding="utf-8")
            body = ast.parse(source).body
            stripped = strip_docstrings(ast.parse(source)).body  # type: ignore[attr-defined]
            if len(body) > len(stripped):  # the module docstring
                body = body[1:]
            out[module] = (body, stripped)
        return out

    @cached_property
    def commands(self) -> dict[str, tuple[str, str]]:
        """CLI command name -> (its module, its function's name)."""
        out = {}
        for module, (body, _) in self._cli.items():
            for fn in body:
                if not isinstance(fn, ast.FunctionDef):
                    continue
                for dec in fn.decorator_list:
                    if (
                        isinstance(dec, ast.Call)
                        and isinstance(dec.func, ast.Attribute)
                        and dec.func.attr == "command"
                    ):
                        name = fn.name.replace("_", "-")
                        if dec.args and isinstance(dec.args[0], ast.Constant):
                            name = str(dec.args[0].value)
                        out[name] = (module, fn.name)
        return out

    def _cli_statements(self, command: str) -> dict[str, list[int]]:
        """Per CLI module, the indices (in `_cli`) of what the command runs: every module's
        module-level statements and typer callbacks, all of a module that defines no command,
        and in the command's module its function and the functions it references,
        transitively."""
        if command not in self.commands:
            known = ", ".join(sorted(self.commands))
            raise KeyError(f"no CLI command {command!r} in {CLI_PACKAGE} (known: {known})")
        home, function = self.commands[command]
        with_commands = {m for m, _ in self.commands.values()}
        command_fns = {(m, f) for m, f in self.commands.values()}
        out: dict[str, list[int]] = {}
        for module, (body, _) in self._cli.items():
            if module not in with_commands:
                out[module] = list(range(len(body)))
                continue
            keep = {
                i
                for i, n in enumerate(body)
                if not isinstance(n, ast.FunctionDef)
                or (n.decorator_list and (module, n.name) not in command_fns)
            }
            if module == home:
                defs = {n.name: i for i, n in enumerate(body) if isinstance(n, ast.FunctionDef)}
                todo, seen = [*keep, defs[function]], set()
                while todo:
                    i = todo.pop()
                    if i in seen:
                        continue
                    seen.add(i)
                    keep.add(i)
                    for node in ast.walk(body[i]):
                        if isinstance(node, ast.Name) and node.id in defs:
                            j = defs[node.id]
                            if (module, body[j].name) not in command_fns or node.id == function:
                                todo.append(j)
            out[module] = sorted(keep)
        return out

    def fingerprint(self, command: str, plugins: Iterable[str] = ()) -> Fingerprint:
        """The code a job of ``circuitlab <command>`` runs, with ``plugins`` (modules the job
        imports by name, e.g. its ACDC method's) added."""
        plugins = list(plugins)
        unknown = [p for p in plugins if p not in self.modules]
        if unknown:
            raise KeyError(f"plugin modules not in the package: {unknown}")
        keep = self._cli_statements(command)
        roots: set[str] = set(plugins)
        parts: list[str] = []
        for module in self.cli_modules:
            body, stripped = self._cli[module]
            is_package = self.modules[module].name == "__init__.py"
            roots |= self._resolve(
                _raw_imports(module, is_package, [body[i] for i in keep[module]])
            )
            parts.append(module)
            parts.extend(normalised_dump(stripped[i]) for i in keep[module])
        cli = set(self.cli_modules)
        modules = {
            m: self.module_hash(m) for m in self.closure(roots - cli, skip=cli) if m not in cli
        }
        modules[f"{CLI_MODULE}:{command}"] = digest(parts)[:12]
        return Fingerprint(command, modules)


def plugins_for(command: str, method: str | None = None) -> list[str]:
    """The modules a job of ``command`` imports by name at run time: an ``acdc-circuit`` job's
    method file (`circuitlab.acdc.registry`). The Snakefile (from the ``method`` wildcard) and the CLI (from
    ``--method``) both ask here."""
    if command == "acdc-circuit" and method is not None:
        from circuitlab.acdc.registry import get_method
        from circuitlab.errors import ConfigError

        try:  # imports that method's file only
            return [get_method(method).module]
        except ConfigError:  # the command itself reports the unknown method
            return []
    return []
