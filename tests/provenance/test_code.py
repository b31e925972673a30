"""Code fingerprints on a temporary copy of the package: a change of behaviour changes the
fingerprint of exactly the commands that run the edited module; comments, docstrings and
formatting change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from circuitlab.provenance.code import CodeIndex, parse_param, plugins_for

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    shutil.copytree(SRC / "circuitlab", tmp_path / "circuitlab")
    return tmp_path


def fingerprints(root: Path) -> dict[tuple[str, str | None], str]:
    index = CodeIndex(root)
    out = {(c, None): index.fingerprint(c).param() for c in index.commands}
    for method in ("acdc", "acdc_approx", "acdc_window", "head_pruning", "eap"):
        plugins = plugins_for("acdc-circuit", method)
        out["acdc-circuit", method] = index.fingerprint("acdc-circuit", plugins).param()
    return out


def changed_after(root: Path, module: str, edit) -> set[tuple[str, str | None]]:
    before = fingerprints(root)
    path = root / (module.replace(".", "/") + ".py")
    text = path.read_text()
    new = edit(text)
    assert new != text, "the edit changed nothing"
    path.write_text(new)
    after = fingerprints(root)
    return {k for k in before if before[k] != after[k]}


def test_docstring_comment_and_formatting_edits_change_nothing(package: Path) -> None:
    def cosmetic(text: str) -> str:
        text = text.replace('"""Aggregate and select', '"""Aggregate, then select', 1)
        text = text.replace("\ndef ", "\n# a new comment\n\n\ndef ", 1)
        return text.replace("    sel = cfg.selection\n", "    sel = (cfg.selection)  # same\n", 1)

    assert changed_after(package, "circuitlab.lrp.discover", cosmetic) == set()


def test_an_lrp_selection_edit_changes_the_lrp_commands_only(package: Path) -> None:
    changed = changed_after(
        package,
        "circuitlab.lrp.selection",
        lambda t: t.replace("def ", "def _unused(): pass\n\n\ndef ", 1),
    )
    commands = {c for c, _ in changed}
    # the circuit (selection), faithfulness (ranks by aggregated attributions), contrastive
    # neurons (select_contrastive) and the REPL run lrp/selection.py; attribution does not
    assert commands == {"lrp-circuit", "lrp-faithfulness", "contrastive-circuit", "repl"}


def test_an_acdc_method_edit_changes_that_methods_jobs_only(package: Path) -> None:
    changed = changed_after(
        package,
        "circuitlab.acdc.fast",
        lambda t: t.replace("import math\n", "import math\nX = 1\n", 1),
    )
    assert changed == {("acdc-circuit", "acdc")}
    changed = changed_after(
        package,
        "circuitlab.acdc.approx",
        lambda t: t.replace("import math\n", "import math\nX = 1\n", 1),
    )
    assert changed == {("acdc-circuit", "acdc_approx"), ("acdc-circuit", "acdc_window")}


def test_a_constant_or_default_change_is_a_change(package: Path) -> None:
    changed = changed_after(
        package,
        "circuitlab.stats",
        lambda t: t.replace("level: float = 0.95", "level: float = 0.9"),
    )
    # the one statistics module runs wherever an interval or a KL divergence is computed
    assert {c for c, _ in changed} == {
        "acdc-circuit",  # ACDC's KL faithfulness
        "acdc-evaluate",
        "caa",
        "caa-steering",
        "compare",
        "diagnose-amplification",  # the steering evaluation's own runs
        "export-mib",  # circuitlab.acdc.mib: the random baseline's intervals
        "lrp-faithfulness",
        "steering",
        "steering-summary",
    }
    unchanged = changed_after(
        package,
        "circuitlab.lrp.faithfulness",
        lambda t: t.replace("from typing import Any\n", "from typing import Any\n\nX = 1\n", 1),
    )
    assert {c for c, _ in unchanged} == {"lrp-faithfulness"}


def test_a_cli_command_edit_changes_that_command_only(package: Path) -> None:
    changed = changed_after(
        package,
        "circuitlab.cli.lrp",
        lambda t: t.replace(
            '    """LRP neuron circuit: `lrp.selection`', '    _ = 0\n    """LRP', 1
        ),
    )
    assert changed == {("lrp-circuit", None)}
    # a helper of the steering commands' module runs in the commands that call it
    changed = changed_after(
        package,
        "circuitlab.cli.steering",
        lambda t: t.replace("if p.stem != exclude", 'if p.stem != exclude and p.stem != ""', 1),
    )
    assert {c for c, _ in changed} == {"steering", "caa-steering"}


def test_the_shared_cli_module_is_in_every_command(package: Path) -> None:
    changed = changed_after(
        package,
        "circuitlab.cli.app",
        lambda t: t.replace("def parse_json_option(", "X = 1\n\n\ndef parse_json_option(", 1),
    )
    assert changed == set(fingerprints(package))


def test_type_checking_imports_and_lazy_reexports(package: Path) -> None:
    index = CodeIndex(package)
    # `if TYPE_CHECKING:` imports never run; a lazily re-exported name runs its module
    assert "circuitlab.acdc.fast" not in index.closure(["circuitlab.acdc"])
    mod = package / "circuitlab" / "blacklist" / "detect.py"
    mod.write_text(mod.read_text() + "\nfrom circuitlab.acdc import fast_acdc  # noqa\n")
    assert "circuitlab.acdc.fast" in CodeIndex(package).closure(["circuitlab.blacklist.detect"])


def test_the_param_names_each_module_and_the_disk_cache_agrees(
    package: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.json"
    first = CodeIndex(package, cache)
    fp = first.fingerprint("lrp-circuit")
    first.save_cache()
    again = CodeIndex(package, cache).fingerprint("lrp-circuit")
    assert again == fp
    modules = parse_param(fp.param())
    assert "lrp.selection" in modules and "cli:lrp-circuit" in modules
    assert all(len(h) == 12 for h in modules.values())
    # a cached record is not trusted once the file changes
    sel = package / "circuitlab" / "lrp" / "selection.py"
    sel.write_text(sel.read_text() + "\nY = 2\n")
    assert CodeIndex(package, cache).fingerprint("lrp-circuit") != fp


def test_unknown_command_or_plugin_is_an_error(package: Path) -> None:
    index = CodeIndex(package)
    with pytest.raises(KeyError, match="no CLI command"):
        index.fingerprint("no-such-command")
    with pytest.raises(KeyError, match="plugin"):
        index.fingerprint("acdc-circuit", ["circuitlab.acdc.nope"])
