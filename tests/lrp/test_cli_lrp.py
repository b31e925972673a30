"""The LRP stages through the CLI: artifacts on success; bad input exits 2 with a clear message
and writes nothing (issue 3, "Bad input")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitlab.blacklist.artifact import Blacklist
from circuitlab.io import write_jsonl
from circuitlab.lrp.circuit import NeuronCircuit
from cli_support import call
from tiny_models import build_tiny, make_rows


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_lrp")
    build_tiny("LlamaForCausalLM", root / "models" / "tiny")
    write_jsonl(root / "tiny" / "toy.jsonl", [r.model_dump() for r in make_rows(12)])
    return root


#: 20 diverse prompts over the tiny tokenizer's words (the default prompts are English).
BLACKLIST = json.dumps(
    {
        "top_k": 32,
        "threshold_fraction": 0.6,
        "prompts": [
            " ".join(f"w{(7 * i + j) % 60 + 2}" for j in range(3 + i % 5)) for i in range(20)
        ],
    }
)


def make_blacklist(monkeypatch, capsys, work: Path, out: Path) -> Path:
    code, err = call(
        "blacklist", "--model", work / "models" / "tiny",
        "--params", BLACKLIST, "--out", out, "--metrics", out.with_suffix(".metrics.json"),
    )  # fmt: skip
    assert code == 0, err
    return out


def run_lrp(
    monkeypatch, capsys, work: Path, out: Path, params: dict, blacklist: Path | None = None
) -> tuple[int, str]:
    """`lrp-attribution` then `lrp-circuit` (the pipeline's two rules); the first failure."""
    raw = out / "tiny" / "toy" / "lrp.raw.safetensors"  # data/circuits/{model}/{task}/
    args = [
        "lrp-attribution", "--model", work / "models" / "tiny",
        "--data", work / "tiny" / "toy.jsonl", "--params", json.dumps(params),
        "--raw", raw, "--metrics", out / "attribution.json",
    ]  # fmt: skip
    code, err = call(*args, *(["--blacklist", blacklist] if blacklist else []))
    if code != 0:
        return code, err
    return call(
        "lrp-circuit", "--raw", raw, "--attribution",
        out / "attribution.json", "--params", json.dumps(params), "--out", out / "lrp.json",
        "--metrics", out / "m.json",
    )  # fmt: skip


def test_blacklist_then_circuit(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    bl = make_blacklist(monkeypatch, capsys, work, tmp_path / "bl.json")
    params = {"selection": {"method": "topk", "top_k": 5}}
    code, err = run_lrp(monkeypatch, capsys, work, tmp_path, params, bl)
    assert code == 0, err
    circuit = NeuronCircuit.load(tmp_path / "lrp.json")
    assert len(circuit) == 5 and circuit.task == "toy" and circuit.model == "tiny"
    banned = Blacklist.load(bl).pairs()
    assert banned, "the test needs a non-empty blacklist"
    assert not {(layer, n) for layer, _, n in circuit.neurons} & banned
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_neurons"] == 5 and metrics["blacklisted"] == len(banned)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"selection": {"method": "best"}}, "threshold"),  # the message lists the methods
        ({"attention_rule": "quarter"}, "'full', 'half' or 'cp_attn'"),
        ({"selection": {"method": "percentage", "threshold": 1.0}}, "largest"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_lrp_circuit_bad_input_writes_nothing(
    work: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    params: dict,
    message: str,
) -> None:
    code, err = run_lrp(monkeypatch, capsys, work, tmp_path, params)
    assert code == 2, err
    assert message in err
    # a config error stops the attribution step; a selection that cannot be made (threshold
    # 1.0) stops the circuit step after valid attributions: no circuit either way
    assert not (tmp_path / "lrp.json").exists() and not (tmp_path / "m.json").exists()
    if "largest" not in message:
        assert not list(tmp_path.iterdir())


def test_blacklist_of_another_model_shape_is_refused(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    bl = make_blacklist(monkeypatch, capsys, work, tmp_path / "bl.json")
    data = json.loads(bl.read_text())
    data["d_mlp"] = 14336
    bl.write_text(json.dumps(data))
    out = tmp_path / "out"
    code, err = run_lrp(monkeypatch, capsys, work, out, {}, bl)
    assert code == 2 and "14336" in err, err
    assert not out.exists()
