"""Issue 4 §5, bad input → a clear error and no artifact, through the stage commands as
Snakemake runs them (in-process `circuitlab.cli.main`, so exit code 2 and the message are what a
user sees).

Where each case is covered:

* clean and corrupt prompts of different token lengths — here for every method (the row is
  named), `test_discover.test_bad_inputs`, `tests/test_cli.py` (``r2: length_mismatch``);
* τ ≤ 0 or NaN — here (approximate ACDC and head pruning read the same sweep),
  `test_sequential.test_bad_config_is_a_config_error`, `test_discover` and `tests/test_cli.py`;
* an empty dataset — here (an empty file for both stages; no test rows for evaluation),
  `test_patch.test_bad_inputs_fail_clearly` (no rows), `tests/test_cli.py` (no train rows);
* a window size < 1 — here (both windows), `test_fast`, `test_approx`, `test_discover`;
* an architecture the graph cannot handle — here (Gemma 2 and 3 through the CLI),
  `test_patch.test_unsupported_architectures_are_refused`, `test_graph` (heads not a multiple of
  KV heads).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from acdc_support import pair_rows

from circuitlab import cli
from circuitlab.acdc.artifact import save_circuit
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.settings import ACDC_METHODS, AcdcConfig
from circuitlab.io import write_jsonl, write_text_atomic
from circuitlab.models import LoadedModel

LLAMA = "LlamaForCausalLM"
CHEAP = {"tao_bases": [1.0], "tao_exps": [-2], "n_prompts": 4}


def _main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> str:
    """Run the CLI; assert it exits 2 without a traceback; return stderr."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["circuitlab", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())  # rich wraps long lines


def _circuit_args(tmp: Path, model: Path, data: Path, method: str, params: dict) -> list[str]:
    return [
        "acdc-circuit", "--method", method, "--model", str(model), "--data", str(data),
        "--params", json.dumps(params), "--out", str(tmp / "c" / f"{method}.json"),
        "--metrics", str(tmp / "m" / f"{method}.json"),
    ]  # fmt: skip


def _nothing_written(tmp: Path) -> None:
    assert not (tmp / "c").exists() and not (tmp / "m").exists()


def _rows_file(tmp: Path, rows: list[dict]) -> Path:
    return write_jsonl(tmp / "d" / "task.jsonl", rows)


@pytest.mark.parametrize("method", ACDC_METHODS)
def test_unequal_clean_and_corrupt_lengths_name_the_row(
    method: str,
    tiny: Callable[[str], LoadedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    rows = [r.model_dump() for r in pair_rows(4)]
    rows[2]["corrupt_prompt"] += " w9"
    data = _rows_file(tmp_path, rows)
    args = _circuit_args(tmp_path, Path(tiny(LLAMA).spec.id), data, method, CHEAP)
    err = _main(args, monkeypatch, capsys)
    assert "p2" in err and "length" in err
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("acdc_approx", {"tao_bases": [-0.5]}, "tao_bases"),
        ("acdc_window", {"tao_bases": [float("nan")]}, "tao_bases"),
        ("acdc", {"tao_exps": [-400]}, "positive and finite"),  # 10^-400 underflows to 0
        ("acdc_approx", {"acdc_approx": {"window": 0}}, "window"),
        ("acdc_window", {"acdc_window": {"window": -3}}, "window"),
        ("acdc", {"acdc": {"window": 0}}, "window"),
        ("acdc", {"acdc": {"max_window": 0}}, "max_window"),
        ("head_pruning", {"head_pruning": {"threshold": 0}}, "threshold"),
        ("acdc", {"reference_tau": 0}, "reference_tau"),
    ],
)
def test_bad_thresholds_and_windows(
    method: str,
    params: dict,
    message: str,
    tiny: Callable[[str], LoadedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    data = _rows_file(tmp_path, [r.model_dump() for r in pair_rows(4)])
    args = _circuit_args(tmp_path, Path(tiny(LLAMA).spec.id), data, method, params)
    err = _main(args, monkeypatch, capsys)
    assert message in err
    _nothing_written(tmp_path)


def test_empty_dataset_file(
    tiny: Callable[[str], LoadedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    data = write_text_atomic(tmp_path / "d" / "task.jsonl", "")
    model = Path(tiny(LLAMA).spec.id)
    err = _main(_circuit_args(tmp_path, model, data, "acdc", CHEAP), monkeypatch, capsys)
    assert "task.jsonl" in err and "no rows" in err
    _nothing_written(tmp_path)
    # evaluation of an existing circuit on an empty file, or on a file without test rows
    lm = tiny(LLAMA)
    art = discover_artifact(lm, pair_rows(4), AcdcConfig(**CHEAP), "eap")
    circuit = save_circuit(tmp_path / "circuits" / "eap.json", art)
    train_only = write_jsonl(tmp_path / "d" / "train.jsonl", [r.model_dump() for r in pair_rows(4)])
    for path, message in ((data, "no rows"), (train_only, "no test rows")):
        args = [
            "acdc-evaluate", "--model", str(model), "--data", str(path), "--circuits", str(circuit),
            "--params", json.dumps(CHEAP), "--metrics", str(tmp_path / "m" / "eval.json"),
            "--plot", str(tmp_path / "m" / "eval.png"),
        ]  # fmt: skip
        assert message in _main(args, monkeypatch, capsys)
        assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("arch", ["Gemma2ForCausalLM", "Gemma3ForCausalLM"])
def test_architecture_the_graph_cannot_handle(
    arch: str,
    tiny: Callable[[str], LoadedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    data = _rows_file(tmp_path, [r.model_dump() for r in pair_rows(4)])
    args = _circuit_args(tmp_path, Path(tiny(arch).spec.id), data, "acdc", CHEAP)
    err = _main(args, monkeypatch, capsys)
    assert "cannot reproduce" in err and "Supported: Llama" in err
    _nothing_written(tmp_path)
