"""Safe by default (DESIGN principle 6): no unpickling of files the user did not create,
safetensors only, `trust_remote_code` off unless a config turns it on."""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from circuitlab.errors import ModelError
from circuitlab.models import loading
from circuitlab.models.settings import HubModelConfig
from circuitlab.models.spec import ModelSpec
from tiny_models import build_tiny

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "circuitlab"

#: Calls that unpickle: always, or unless a keyword has the safe value (torch.load: an explicit
#: weights_only=True), or only when a keyword is set (np.load: allow_pickle=True).
ALWAYS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"),
          ("dill", "loads"), ("joblib", "load"), ("pd", "read_pickle")}  # fmt: skip
SAFE_ONLY_WITH = {("torch", "load"): ("weights_only", True)}
UNSAFE_WITH = {("np", "load"): ("allow_pickle", True), ("numpy", "load"): ("allow_pickle", True)}


def _has(node: ast.Call, arg: str, value: object) -> bool:
    return any(
        k.arg == arg and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in node.keywords
    )


def unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        key = (owner.id if isinstance(owner, ast.Name) else "", node.func.attr)
        if (
            key in ALWAYS
            or (key in SAFE_ONLY_WITH and not _has(node, *SAFE_ONLY_WITH[key]))
            or (key in UNSAFE_WITH and _has(node, *UNSAFE_WITH[key]))
        ):
            found.append(f"{key[0]}.{key[1]} at line {node.lineno}")
    return found


def test_the_scanner_catches_unsafe_calls() -> None:
    code = (
        "torch.load(p)\ntorch.load(p, weights_only=True)\npickle.loads(b)\n"
        "np.load(p)\nnp.load(p, allow_pickle=True)\n"
    )
    assert unsafe_calls(ast.parse(code)) == [
        "torch.load at line 1",
        "pickle.loads at line 3",
        "np.load at line 5",
    ]


def test_package_source_never_unpickles() -> None:
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = unsafe_calls(ast.parse(text))
        if "import pickle" in text or "from pickle" in text:
            found.append("imports pickle")
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_no_source_turns_remote_code_on() -> None:
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), (
                    f"{path}:{node.value.lineno} passes trust_remote_code=True"
                )


def test_trust_remote_code_is_off_by_default_and_in_every_shipped_config() -> None:
    assert ModelSpec(id="org/model").trust_remote_code is False
    assert HubModelConfig(source="hf", id="org/model").trust_remote_code is False
    for path in sorted((ROOT / "config").glob("*.yaml")):
        models = (yaml.safe_load(path.read_text()) or {}).get("models") or {}
        for name, entry in models.items():
            if entry and entry.get("source") == "hf":
                assert entry.get("trust_remote_code", False) is False, f"{path}: {name}"


def test_loading_passes_remote_code_off_and_safetensors_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_tiny("LlamaForCausalLM", tmp_path / "m")
    seen: list[dict] = []
    real = loading.AutoModelForCausalLM.from_pretrained

    def spy(source: str, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(kwargs)
        return real(source, **kwargs)

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", spy)
    loading.load_model(tmp_path / "m")
    (kwargs,) = seen
    assert kwargs["trust_remote_code"] is False and kwargs["use_safetensors"] is True


def test_pickle_only_weights_are_refused_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "m"
    build_tiny("LlamaForCausalLM", src)
    # a .bin whose unpickling would run code: if anything unpickles it, the test fails
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.touch, ())

    state = load_file(src / "model.safetensors")
    (src / "model.safetensors").unlink()
    with open(src / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"state": state, "payload": Payload()}, fh)
    calls: list[str] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append("torch.load"))
    with pytest.raises(ModelError, match=r"model\.safetensors.*pickle \.bin weights are refused"):
        loading.load_model(src)
    assert calls == [] and not marker.exists()
    shutil.rmtree(src)
