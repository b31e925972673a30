"""`circuitlab steering`, `caa`, `caa-steering`: artifacts on success; bad input exits 2 with a
clear message and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from steering_data import NEUTRAL, behaviour_rows, task_rows

from circuitlab.io import read_json, write_jsonl
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.steering import load_vectors
from cli_support import call
from tiny_models import build_tiny

STEER = json.dumps(
    {"multipliers": [0, 1, 2], "neutral_prompts": NEUTRAL, "bootstrap_resamples": 100,
     "max_new_tokens": 2}
)  # fmt: skip
CAA = json.dumps({"multipliers": [0, 1, 2], "max_kl": 100.0})


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_steering")
    build_tiny("LlamaForCausalLM", root / "models" / "tiny")
    write_jsonl(root / "tiny" / "capitals.jsonl", [r.model_dump() for r in task_rows(12)])
    write_jsonl(root / "tiny" / "ioi.jsonl", [r.model_dump() for r in task_rows(9, seed=2)])
    write_jsonl(root / "tiny" / "refusal.jsonl", [r.model_dump() for r in behaviour_rows()])
    train_only = [r.model_dump() for r in behaviour_rows() if r.split == "train"]
    write_jsonl(root / "bad" / "refusal.jsonl", train_only)
    keys = {(ly, -1, n): 1.0 for ly in range(2) for n in range(0, 30, 3)}
    NeuronCircuit(keys, "tiny", "capitals", "lrp", n_layers=2, d_mlp=64).save(
        root / "circuits" / "lrp.json"
    )
    return root


def steer_args(work: Path, out: Path, *, data: str = "tiny/capitals.jsonl", circuit: Path | None = None,
               params: str = STEER) -> list[object]:  # fmt: skip
    return [
        "steering", "--model", work / "models" / "tiny", "--data", work / data,
        "--circuit", circuit or work / "circuits" / "lrp.json",
        "--others", work / "tiny" / "ioi.jsonl", "--others", work / "tiny" / "capitals.jsonl",
        "--params", params, "--out", out / "lrp.json", "--metrics", out / "metrics.json",
        "--plot", out / "lrp.png",
    ]  # fmt: skip


def test_steering_writes_artifacts(monkeypatch, capsys, work: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, err = call(*steer_args(work, tmp_path))
    assert code == 0, err
    rep = read_json(tmp_path / "lrp.json")
    assert rep["format"] == "circuitlab.steering/2" and rep["kind"] == "task"
    assert rep["model"] == "tiny" and set(rep["leakage"]) == {"ioi"}
    metrics = read_json(tmp_path / "metrics.json")
    assert (
        metrics["summary"]["suppress"]["delta"]["hi"] == rep["summary"]["suppress"]["delta"]["hi"]
    )
    assert metrics["multipliers"] == "0,1,2"
    assert (tmp_path / "lrp.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "case, match",
    [
        ("multiplier", "multipliers"),
        ("range", "outside"),
        ("empty", "empty"),
        ("no_test", "no rows in the test split"),
    ],
)
def test_steering_bad_input_writes_nothing(  # type: ignore[no-untyped-def]
    monkeypatch, capsys, work: Path, tmp_path: Path, case: str, match: str
) -> None:
    kwargs: dict = {}
    if case == "multiplier":
        kwargs["params"] = json.dumps({"multipliers": [0, "lots"]})
    elif case in ("range", "empty"):
        keys = {(0, -1, 999): 1.0} if case == "range" else {}
        path = tmp_path / "circ" / "lrp.json"
        NeuronCircuit(keys, "tiny", "capitals", "lrp", n_layers=2, d_mlp=64).save(path)
        kwargs["circuit"] = path
    else:
        kwargs["data"] = "bad/refusal.jsonl"
    out = tmp_path / "out"
    code, err = call(*steer_args(work, out, **kwargs))
    assert code == 2 and match in err, err
    assert not out.exists() or not any(out.iterdir())


def test_caa_and_caa_steering(monkeypatch, capsys, work: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vec = tmp_path / "caa" / "refusal.safetensors"
    model, data = work / "models" / "tiny", work / "tiny" / "refusal.jsonl"
    code, err = call(
        "caa", "--model", model, "--data", data, "--params", CAA,
        "--steering", STEER, "--out", vec, "--metrics", tmp_path / "caa.json",
    )  # fmt: skip
    assert code == 0, err
    tensors, meta = load_vectors(vec)
    assert set(tensors) == {"resid", "mlp_out", "neuron_diff", "activation_weighted"}
    assert meta["model"] == "tiny" and meta["layer"] in ("0", "1")
    assert read_json(tmp_path / "caa.json")["layer"] == int(meta["layer"])
    out = tmp_path / "steer"
    code, err = call(
        "caa-steering", "--model", model, "--data", data, "--vectors", vec,
        "--others", work / "tiny" / "capitals.jsonl", "--params", CAA, "--steering", STEER,
        "--out", out / "caa.json", "--metrics", out / "m.json", "--plot", out / "caa.png",
    )  # fmt: skip
    assert code == 0, err
    rep = read_json(out / "caa.json")
    assert rep["method"] == "caa" and rep["layer"] == int(meta["layer"])
    assert set(rep["leakage"]) == {"capitals"} and (out / "caa.png").exists()
    # a layer outside the model: clear error, no vectors written
    bad = tmp_path / "bad" / "refusal.safetensors"
    code, err = call(
        "caa", "--model", model, "--data", data,
        "--params", json.dumps({"layers": [7]}), "--steering", STEER, "--out", bad,
        "--metrics", tmp_path / "bad" / "m.json",
    )  # fmt: skip
    assert code == 2 and "outside the model" in err
    assert not bad.parent.exists() or not any(bad.parent.iterdir())
