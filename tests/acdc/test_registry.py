"""The edge-method registry: one file per method is all the rest of circuitlab reads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from circuitlab.acdc.registry import edge_methods, get_method, load_methods, methods_table
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.errors import ConfigError
from circuitlab.provenance.code import plugins_for

NEW_METHOD = """
from pydantic import Field

from circuitlab.acdc.registry import EdgeMethod
from circuitlab.types import StrictModel


class Settings(StrictModel):
    strength: float = Field(default=1.0, description="how hard")


def run(ctx, cfg, own):
    return {}


METHOD = EdgeMethod(name="{name}", summary="a new method", settings=Settings, run=run,
                    kind="ranking", score="s", cost="c", order=5)
"""


def test_a_method_file_dropped_in_the_package_is_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "more_methods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_helpers.py").write_text("X = 1\n")  # helpers are not methods
    (pkg / "brand_new.py").write_text(NEW_METHOD.replace("{name}", "brand_new"))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = load_methods("more_methods")
    assert list(found) == ["brand_new"] and found["brand_new"].kind == "ranking"
    assert found["brand_new"].module == "circuitlab.acdc.methods.brand_new"  # where it would live
    (pkg / "misnamed.py").write_text(NEW_METHOD.replace("{name}", "other"))
    for m in [m for m in sys.modules if m.startswith("more_methods")]:
        monkeypatch.delitem(sys.modules, m)
    with pytest.raises(TypeError, match="its file's name"):
        load_methods("more_methods")


@pytest.mark.parametrize("name", list(edge_methods()))
def test_every_method_is_in_the_config_the_cli_the_docs_and_the_fingerprint(name: str) -> None:
    entry = get_method(name)
    cfg = AcdcConfig()
    assert isinstance(cfg.method_settings(name), entry.settings)  # acdc.<name>
    assert (name in cfg.methods) == entry.default
    params = cfg.discovery_params(name)
    assert params[name] == entry.settings().model_dump(mode="json")  # its own keys only
    assert not {m for m in edge_methods() if m != name} & set(params)
    assert set(entry.shared) <= set(params)
    assert f"| `{name}`" in methods_table()
    assert plugins_for("acdc-circuit", name) == [entry.module]
    schema = AcdcConfig.model_json_schema()
    assert name in schema["properties"]


def test_unknown_methods_are_named_errors() -> None:
    with pytest.raises(ConfigError, match="unknown edge method 'nope'"):
        get_method("nope")
    with pytest.raises(ConfigError, match="unknown edge method"):
        AcdcConfig().method_settings("nope")
