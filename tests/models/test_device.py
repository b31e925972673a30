"""The device switch: CPU unless a model entry or `--device` asks for a GPU; 'auto' resolved in
one place; on CUDA the determinism settings and a provenance record of the GPU.

No GPU here: CUDA is simulated by monkeypatching `torch.cuda`'s queries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from circuitlab.errors import ModelError
from circuitlab.io import write_jsonl
from circuitlab.models import ModelSpec, load_model
from circuitlab.models.spec import resolve_device, uses_gpu
from circuitlab.models.toy.settings import ToyModelConfig
from circuitlab.provenance import job_record, note_device, running
from circuitlab.provenance.numerics import device_record, set_determinism
from cli_support import run
from tiny_models import build_tiny, make_rows


@pytest.fixture
def cuda_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """`torch.cuda` reports one H100 (nothing is ever run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (9, 0))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def torch_flags() -> Iterator[None]:
    """Restore the global determinism flags a test changes."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    ) = saved[2:]


def test_every_default_is_cpu_even_where_cuda_is_available(cuda_present: None) -> None:
    assert ModelSpec(id="gpt2").resolved_device() == torch.device("cpu")
    assert ToyModelConfig(source="toy").device == "cpu"
    assert not uses_gpu("cpu")


def test_auto_is_cuda_only_where_cuda_is_available(
    monkeypatch: pytest.MonkeyPatch, cuda_present: None
) -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert uses_gpu("auto") and uses_gpu("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert not uses_gpu("auto")
    assert uses_gpu("cuda")  # the config asks for it: the job takes a GPU (and fails without)


def test_a_device_that_cannot_be_used_is_refused(no_cuda: None) -> None:
    with pytest.raises(ModelError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(ValidationError, match="device"):
        ModelSpec(id="gpt2", device="tpu-please")
    with pytest.raises(ValidationError, match="device"):
        ToyModelConfig(source="toy", device="gpu")


def test_determinism_is_set_for_cuda_and_left_alone_for_cpu(
    monkeypatch: pytest.MonkeyPatch, torch_flags: None
) -> None:
    torch.use_deterministic_algorithms(False)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    set_determinism(torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_determinism("cuda:0")
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_the_device_record_names_the_gpu_on_cuda(cuda_present: None) -> None:
    assert device_record(torch.device("cpu"), torch.float32) == {
        "device": "cpu",
        "dtype": "float32",
    }
    got = device_record(torch.device("cuda:0"), torch.bfloat16)
    assert got["device"] == "cuda:0" and got["dtype"] == "bfloat16"
    assert got["gpu"] == "NVIDIA H100 80GB HBM3" and got["capability"] == "9.0"
    assert got["cuda"] == "12.4" and got["cudnn"] == 90100


def test_a_commands_results_carry_its_models_device() -> None:
    note_device({"device": "cpu", "dtype": "float32"})  # outside a command: not kept
    assert "model_device" not in job_record()
    with running("evaluate-model"):
        assert "model_device" not in job_record()  # before the model is loaded
        note_device({"device": "cuda:0", "dtype": "bfloat16", "gpu": "H100"})
        assert job_record()["model_device"]["gpu"] == "H100"
    assert "model_device" not in job_record()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("device")
    build_tiny("LlamaForCausalLM", root / "llama")
    write_jsonl(root / "rows.jsonl", (r.model_dump() for r in make_rows(6)))
    ModelSpec(id=str(root / "llama"), backend="transformer_lens").to_reference(root / "tl.json")
    return {"llama": root / "llama", "rows": root / "rows.jsonl", "tl": root / "tl.json"}


def evaluate(tmp: Path, tiny: dict[str, Path], *extra: str):  # type: ignore[no-untyped-def]
    return run(
        "evaluate-model", "--model", tiny["llama"], "--data", tiny["rows"], "--min-accuracy",
        "0", "--out", tmp / "m.json", *extra, cwd=tmp,
    )  # fmt: skip


def test_the_cli_runs_on_the_device_asked_for_and_records_it(
    tmp_path: Path, tiny: dict[str, Path], no_cuda: None
) -> None:
    proc = evaluate(tmp_path, tiny)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "m.json").read_text())["provenance"]["model_device"]
    assert record == {"device": "cpu", "dtype": "float32"}
    proc = evaluate(tmp_path, tiny, "--device", "cuda")
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    proc = evaluate(tmp_path, tiny, "--device", "gpu")
    assert proc.returncode == 2 and "not a device" in proc.stderr


def test_a_model_directory_takes_the_backend_on_the_command_line(
    tmp_path: Path, tiny: dict[str, Path]
) -> None:
    proc = run(
        "blacklist", "--model", tiny["llama"], "--backend", "transformer_lens",
        "--out", tmp_path / "b.json", "--metrics", tmp_path / "m.json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "the neuron blacklist needs circuitlab's architecture adapter" in proc.stderr
    # a reference names its own backend: the command line does not contradict it
    proc = run(
        "evaluate-model", "--model", tiny["tl"], "--backend", "native", "--data", tiny["rows"],
        "--out", tmp_path / "e.json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "set `backend` in the model's config entry" in proc.stderr


def test_the_backend_override_loads_the_bridge(tmp_path: Path, tiny: dict[str, Path]) -> None:
    from circuitlab.cli.app import load_stage_model

    lm = load_stage_model(tiny["llama"], "cpu", "transformer_lens")
    assert lm.backend == "transformer_lens" and lm.adapter is None and lm.bridge is not None
    assert load_model(tiny["llama"]).backend == "native"


def test_every_command_that_loads_a_model_takes_device() -> None:
    """A command loads its model through `load_stage_model` or `model_spec`, whose ``device``
    comes from the command's `--device`."""
    import inspect

    import typer

    from circuitlab.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    loading = {
        name
        for name, cmd in commands.items()
        if re.search(r"\b(load_stage_model|model_spec)\(", inspect.getsource(cmd.callback))
    }
    assert {"evaluate-model", "acdc-circuit", "blacklist", "compare", "caa", "repl"} <= loading
    for name in loading:
        assert "device" in {p.name for p in commands[name].params}, name
