"""`circuitlab export` picks the circuit a researcher means: by default the reference circuit
the report draws (not the smallest τ), a τ only when the sweep has it, and it says which."""

from __future__ import annotations

import json
from pathlib import Path

from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit, save_circuit
from circuitlab.acdc.graph import build_graph
from circuitlab.models.adapters import ModelDims
from cli_support import run

DIMS = ModelDims(n_layers=2, d_model=16, d_mlp=32, n_heads=2, n_kv_heads=2, head_dim=8,
                 vocab_size=50)  # fmt: skip


def sweep(tmp_path: Path) -> Path:
    edges = build_graph(DIMS).edges
    circuits = tuple(
        EdgeCircuit(f"tau={t:g}", edges[:n], t) for t, n in ((1e-4, 9), (1e-2, 5), (5e-2, 2))
    )
    art = CircuitArtifact(
        method="acdc", model="m", task="t", edges=edges, scores=(0.0,) * len(edges),
        score_kind="prune_tau", circuits=circuits, n_forward=0, n_backward=0, seconds=0.0,
        n_prompts=4, params={"ablation": "resample"},
    )  # fmt: skip
    path = tmp_path / "acdc.json"
    save_circuit(path, art)
    return path


def test_the_default_is_the_reference_circuit_and_the_line_says_which(tmp_path: Path) -> None:
    out = tmp_path / "tl.json"
    ran = run("export", "--circuit", sweep(tmp_path), "--out", out, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (
        json.loads(out.read_text())["tau"] == 1e-2 and len(json.loads(out.read_text())["kept"]) == 5
    )
    assert "5 edges (τ = 0.01, the reference circuit" in ran.stdout


def test_a_tau_outside_the_sweep_is_an_error_naming_the_sweep(tmp_path: Path) -> None:
    ran = run("export", "--circuit", sweep(tmp_path), "--tau", "5", "--out", tmp_path / "x.json")
    assert ran.returncode == 2 and not (tmp_path / "x.json").exists()
    assert "no circuit at τ = 5" in ran.stderr and "0.0001, 0.01, 0.05" in ran.stderr
    ok = run("export", "--circuit", sweep(tmp_path), "--tau", "0.05", "--out", tmp_path / "y.json")
    assert ok.returncode == 0 and "2 edges (τ = 0.05)" in ok.stdout


def test_a_wrong_label_lists_the_labels(tmp_path: Path) -> None:
    ran = run(
        "export", "--circuit", sweep(tmp_path), "--label", "top=40", "--out", tmp_path / "x.json"
    )
    assert ran.returncode == 2 and "tau=0.0001, tau=0.01, tau=0.05" in ran.stderr
