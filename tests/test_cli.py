"""The CLI as Snakemake calls it: artifacts on success, clear errors and nothing written on failure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.tasks.io import load_rows
from circuitlab.tracking import read_metrics, read_provenance
from cli_support import run


def test_datasets_writes_rows_and_metrics(tmp_path: Path) -> None:
    out, metrics = tmp_path / "d" / "sva.jsonl", tmp_path / "m" / "sva.json"
    proc = run(
        "datasets",
        "--task",
        "sva",
        "--params",
        '{"n_train": 5, "n_test": 3}',
        "--out",
        str(out),
        "--metrics",
        str(metrics),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = load_rows(out)
    assert sum(r.split == "train" for r in rows) == 5
    assert read_metrics(metrics) == {"n_rows": 8, "n_test": 3, "n_train": 5}
    assert read_provenance(metrics)["code"]["command"] == "datasets"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "capitols"], "unknown task 'capitols'; choose one of: capitals"),
        (["--task", "sva", "--params", "{bad"], "--params is not valid JSON"),
        (["--task", "sva", "--params", "[1]"], "--params must be a JSON object"),
        (["--task", "sva", "--params", '{"n_tran": 3}'], "n_tran"),
        (["--task", "sva", "--params", '{"n_train": 0}'], "n_train"),
    ],
)
def test_datasets_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "x.jsonl"
    proc = run(
        "datasets", *args, "--out", str(out), "--metrics", str(tmp_path / "m.json"), cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "m.json").exists()


def test_stage_without_its_input_names_the_rule(tmp_path: Path) -> None:
    proc = run(
        "check-dataset",
        "--model",
        str(tmp_path / "models" / "toy"),
        "--data",
        str(tmp_path / "missing.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--metrics",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "made by the Snakemake rule 'train_toy_model'" in proc.stderr  # the first option
    proc = run(
        "check-dataset", "--model", str(tmp_path), "--data", str(tmp_path / "missing.jsonl"),
        "--out", str(tmp_path / "o.jsonl"), "--metrics", str(tmp_path / "m.json"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "made by the Snakemake rule 'datasets'" in proc.stderr
    rows = tmp_path / "rows.jsonl"
    run(
        "datasets",
        "--task",
        "sva",
        "--params",
        '{"n_train": 2, "n_test": 2}',
        "--out",
        str(rows),
        "--metrics",
        str(tmp_path / "dm.json"),
        cwd=tmp_path,
    )
    proc = run(
        "check-dataset",
        "--model",
        str(tmp_path / "models" / "toy"),
        "--data",
        str(rows),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--metrics",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "made by the Snakemake rule 'train_toy_model'" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_malformed_dataset_lists_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    row = {
        "id": "a",
        "split": "train",
        "prompt": "p",
        "target": " x",
        "counterfactual": " x",
        "corrupt_prompt": "q",
        "meta": {},
    }
    bad.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "b", "split": "dev"}) + "\n")
    proc = run(
        "check-dataset",
        "--model",
        str(tmp_path),
        "--data",
        str(bad),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--metrics",
        str(tmp_path / "m.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "2 invalid row(s)" in proc.stderr
    assert "id='a'" in proc.stderr and "both ' x'" in proc.stderr
    assert "id='b'" in proc.stderr and "split" in proc.stderr


# ----------------------------------------------------------------------------- edge circuits
@pytest.fixture(scope="module")
def edge_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama (and a refused Gemma 2) saved to disk, and rows that tokenize for them."""
    from circuitlab.io import write_jsonl
    from circuitlab.types import TaskRow
    from tiny_models import build_tiny

    root = tmp_path_factory.mktemp("edge")
    build_tiny("LlamaForCausalLM", root / "llama")
    build_tiny("Gemma2ForCausalLM", root / "gemma2")
    rows = []
    for i in range(8):
        words = [f"w{(7 * i + k) % 60 + 2}" for k in range(3 + i % 3)]
        other = [f"w{(11 * i + 3 * k) % 60 + 2}" for k in range(len(words))]
        rows.append(
            TaskRow(
                id=f"r{i}",
                split="train" if i < 5 else "test",
                prompt=" ".join(words),
                corrupt_prompt=" ".join(other),
                target=f" w{(i + 5) % 60 + 2}",
                counterfactual=f" w{(i + 9) % 60 + 2}",
            )
        )
    write_jsonl(root / "rows.jsonl", (r.model_dump() for r in rows))
    write_jsonl(root / "test_only.jsonl", (r.model_dump() for r in rows if r.split == "test"))
    bad = [r.model_dump() for r in rows]
    bad[2]["corrupt_prompt"] += " w3"
    write_jsonl(root / "unequal.jsonl", bad)
    return {
        "llama": root / "llama",
        "gemma2": root / "gemma2",
        "rows": root / "rows.jsonl",
        "test_only": root / "test_only.jsonl",
        "unequal": root / "unequal.jsonl",
    }


CHEAP_ACDC = (
    '{"tao_bases": [1], "tao_exps": [-2, -1], "n_prompts": 4, "eap": {"sizes": [0.1, 0.5]}}'
)


def acdc_circuit(tmp: Path, model: Path, data: Path, method: str, params: str):  # type: ignore[no-untyped-def]
    return run(
        "acdc-circuit", "--method", method, "--model", str(model), "--data", str(data),
        "--params", params, "--out", str(tmp / "c" / f"{method}.json"),
        "--metrics", str(tmp / "m" / f"{method}.json"), cwd=tmp,
    )  # fmt: skip


def test_acdc_circuit_and_evaluate(tmp_path: Path, edge_inputs: dict[str, Path]) -> None:
    for method in ("eap", "head_pruning"):
        proc = acdc_circuit(tmp_path, edge_inputs["llama"], edge_inputs["rows"], method, CHEAP_ACDC)
        assert proc.returncode == 0, proc.stderr
        circuit = json.loads((tmp_path / "c" / f"{method}.json").read_text())
        assert circuit["method"] == method and circuit["n_prompts"] == 4
        assert "reference" not in circuit  # chosen by the evaluation, from reference_tau
    proc = run(
        "acdc-evaluate", "--model", str(edge_inputs["llama"]), "--data", str(edge_inputs["rows"]),
        "--circuits", str(tmp_path / "c" / "eap.json"),
        "--circuits", str(tmp_path / "c" / "head_pruning.json"),
        "--dots", str(tmp_path / "c" / "eap.dot"), "--dots", str(tmp_path / "c" / "head_pruning.dot"),
        "--params", CHEAP_ACDC, "--metrics", str(tmp_path / "eval.json"),
        "--plot", str(tmp_path / "eval.png"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "evaluate edge sets" in proc.stderr  # progress goes to the job's log
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["methods"]) == {"eap", "head_pruning"} and report["n_prompts"] == 3
    for method in ("eap", "head_pruning"):
        assert (tmp_path / "c" / f"{method}.dot").read_text().startswith("digraph")
        rendered = report["methods"][method]["rendered"]
        assert rendered is (shutil.which("dot") is not None)
    assert "eap_vs_head_pruning" in report["agreement"]["jaccard"]
    assert (tmp_path / "eval.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("model", "data", "method", "params", "message"),
    [
        ("llama", "rows", "acdc", '{"tao_bases": [0]}', "tao_bases must be positive"),
        ("llama", "rows", "acdc", '{"tao_bases": [NaN]}', "tao_bases must be positive"),
        ("llama", "rows", "acdc", '{"tao_exps": [400]}', "positive and finite"),
        ("llama", "rows", "acdc", '{"acdc": {"window": 0}}', "window"),
        ("llama", "rows", "acdc", '{"tao_bases": [1], "taos": 1}', "taos"),
        ("llama", "rows", "acdcc", "{}", "unknown edge method 'acdcc'"),
        ("llama", "test_only", "eap", "{}", "no rows in the train split"),
        ("llama", "unequal", "eap", "{}", "r2: length_mismatch"),
        ("gemma2", "rows", "eap", "{}", "Gemma"),
    ],
)
def test_acdc_circuit_bad_input(
    tmp_path: Path,
    edge_inputs: dict[str, Path],
    model: str,
    data: str,
    method: str,
    params: str,
    message: str,
) -> None:
    proc = acdc_circuit(tmp_path, edge_inputs[model], edge_inputs[data], method, params)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "m").exists()


def test_acdc_evaluate_without_its_circuit_names_the_rule(
    tmp_path: Path, edge_inputs: dict[str, Path]
) -> None:
    proc = run(
        "acdc-evaluate", "--model", str(edge_inputs["llama"]), "--data", str(edge_inputs["rows"]),
        "--circuits", str(tmp_path / "missing" / "acdc.json"),
        "--metrics", str(tmp_path / "eval.json"), "--plot", str(tmp_path / "eval.png"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "made by the Snakemake rule 'acdc_circuit'" in proc.stderr
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "eval.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "data/models/typo"], "input artifact data/models/typo does not exist"),
        (["--out", "/proc/circuitlab/c.json"], "cannot write output /proc/circuitlab/c.json"),
    ],
)
def test_a_typo_fails_before_any_model_code_loads(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """Paths are checked by the options' callbacks, before the stage imports torch: a typo
    costs the interpreter's start, not a model load (was ~10 s)."""
    import time

    (tmp_path / "rows.jsonl").write_text("")
    base = {"--model": str(tmp_path), "--data": str(tmp_path / "rows.jsonl"),
            "--out": str(tmp_path / "c.json"), "--metrics": str(tmp_path / "m.json")}  # fmt: skip
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    code = (
        "import atexit, sys, circuitlab.cli as c\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
        "c.main()"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, "acdc-circuit", "--method", "acdc",
         *[x for kv in base.items() for x in kv]],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "torch imported: False" in proc.stdout  # the check ran before any model code
    assert elapsed < 15.0, f"took {elapsed:.1f} s"  # loose: a shared CI machine


def test_long_stages_report_progress(tmp_path: Path, edge_inputs: dict[str, Path]) -> None:
    """ACDC's progress (edges of the sweep, distinct states) is in what the job logs."""
    proc = acdc_circuit(tmp_path, edge_inputs["llama"], edge_inputs["rows"], "acdc", CHEAP_ACDC)
    assert proc.returncode == 0, proc.stderr
    assert "acdc: 2 τ, edges" in proc.stderr and "states=" in proc.stderr
    quiet = run(
        "acdc-circuit", "--method", "acdc_approx", "--model", edge_inputs["llama"],
        "--data", edge_inputs["rows"], "--params", CHEAP_ACDC,
        "--out", tmp_path / "q.json", "--metrics", tmp_path / "qm.json",
        cwd=tmp_path, env={"CIRCUITLAB_PROGRESS": "0"},
    )  # fmt: skip
    assert quiet.returncode == 0 and "acdc (guided)" not in quiet.stderr
