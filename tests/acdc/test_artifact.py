"""Edge-circuit artifacts: JSON round trip (inf as "inf"), malformed files, the DOT picture."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from circuitlab.acdc.artifact import (
    CircuitArtifact,
    EdgeCircuit,
    load_circuit,
    node_layer,
    render_png,
    save_circuit,
    to_dot,
)
from circuitlab.acdc.graph import build_graph
from circuitlab.errors import ArtifactError
from circuitlab.models.adapters import ModelDims


def make_artifact() -> CircuitArtifact:
    graph = build_graph(
        ModelDims(
            n_layers=2, d_model=8, d_mlp=16, n_heads=2, n_kv_heads=1, head_dim=4, vocab_size=10
        )
    )
    edges = graph.edges
    scores = tuple(math.inf if i % 3 == 0 else 0.01 * i for i in range(len(edges)))
    kept = tuple(e for e, s in zip(edges, scores, strict=True) if s > 0.1)
    return CircuitArtifact(
        method="acdc",
        model="tiny",
        task="capitals",
        edges=edges,
        scores=scores,
        score_kind="prune_tau",
        circuits=(
            EdgeCircuit("tau=0.1", kept, 0.1, 0.05),
            EdgeCircuit("tau=1", kept[:3], 1.0, 0.9),
        ),
        n_forward=12,
        n_backward=0,
        seconds=0.5,
        n_prompts=4,
        params={"tao_bases": [1.0]},
        metric_values={"faithfulness_tau=0.1": 0.05},
        details={"n_batched_forward": 10},
    )


def test_round_trip_writes_inf_as_string(tmp_path: Path) -> None:
    art = make_artifact()
    path = save_circuit(tmp_path / "c" / "acdc.json", art)
    raw = json.loads(path.read_text())
    assert raw["scores"][art.edges[0]] == "inf"
    assert "Infinity" not in path.read_text()
    back = load_circuit(path)
    assert back == art
    assert back.scores[0] == math.inf


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("scores"), "scores"),
        (lambda d: d.update(format="other/1"), "format"),
        (lambda d: d["circuits"][0]["kept"].append("X->Y"), "unknown edges"),
        (lambda d: d["scores"].update({"A0.0->Resid End": "big"}), "scores"),
        (lambda d: d.update(reference=1), "reference"),  # format 1's field: not read silently
        (lambda d: d.update(circuits=[]), "no circuits"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_malformed_files_raise_artifact_error(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = make_artifact().to_json()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        load_circuit(path)


def test_missing_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="acdc_circuit"):
        load_circuit(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_circuit(tmp_path / "x.json")


def test_the_reference_circuit_is_the_tau_closest_to_reference_tau() -> None:
    art = make_artifact()  # circuits at τ = 0.1 and 1
    assert art.reference_index(1.0) == 1 and art.reference_index(0.2) == 0
    assert art.reference_index(0.5) == 1  # log scale: 0.5 is nearer 1 than 0.1
    assert art.reference_circuit(0.01).label == "tau=0.1"
    eap = replace(art, score_kind="abs_attribution")
    assert eap.reference_index(1.0) == 0  # no τ sweep: the first circuit


def test_dot_draws_a_circuit_by_layer() -> None:
    art = make_artifact()
    text = to_dot(art, art.reference_circuit(1.0))
    assert text.startswith("digraph circuit {") and text.rstrip().endswith("}")
    ref = art.reference_circuit(1.0).kept
    assert text.count(" -> ") == len(ref)
    src, dst = ref[0].split("->")
    assert f'"{src}" -> "{dst}";' in text
    assert "rank=same" in text and "(tau=1, 3 edges)" in text
    assert node_layer("Resid Start", 2) == 0 and node_layer("A1.0.Q", 2) == 3
    assert node_layer("MLP 1", 2) == 4 and node_layer("Resid End", 2) == 5
    with pytest.raises(ArtifactError):
        node_layer("B3", 2)


def test_render_png_skips_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("circuitlab.acdc.artifact.shutil.which", lambda _: None)
    art = make_artifact()
    assert render_png(to_dot(art, art.circuits[0]), tmp_path / "c.png") is False
    assert not (tmp_path / "c.png").exists()
