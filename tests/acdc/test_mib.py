"""MIB's yardstick (`circuitlab.acdc.mib`) and the EAP-IG estimators against MIB's own code.

The fixture ``fixtures/mib_tiny`` is a tiny random grouped-query Llama (2 layers, 4 query and
2 KV heads), 24 rows, and what MIB-circuit-track b759df3 + EAP-IG 7af394a computed on them
(`tests/benchmarks/bench_mib.py --write-fixture` with the peer venv): the EAP, EAP-IG-inputs
and EAP-IG-activations scores of every edge of its graph (K/V inputs per query head), and
MIB's faithfulness curves, CPR and CMD of each. circuitlab runs its own stage functions on the
same files and must agree — without the peer installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from circuitlab.acdc import patchable, prepare
from circuitlab.acdc.artifact import CircuitArtifact
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.eap import EAPConfig, edge_attribution
from circuitlab.acdc.evaluate import evaluate_circuits, run_masks
from circuitlab.acdc.graph import build_graph
from circuitlab.acdc.mib import (
    PERCENTAGES,
    NodeIndex,
    areas,
    importance,
    mib_edge_name,
    n_for,
    prune,
    to_mib_json,
    top_n,
)
from circuitlab.acdc.scores import EdgeEvaluation
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.errors import ConfigError
from circuitlab.models import load_model
from circuitlab.models.adapters import ModelDims
from circuitlab.prompts import encode_rows
from circuitlab.types import TaskRow

FIXTURE = Path(__file__).parent / "fixtures" / "mib_tiny"
PEER_METHODS = {"EAP": "eap", "EAP-IG-inputs": "eap_ig_inputs", "EAP-IG-activations": "eap_ig_activations"}  # fmt: skip


@pytest.fixture(scope="module")
def peer() -> dict:
    return json.loads((FIXTURE / "peer.json").read_text())


@pytest.fixture(scope="module")
def rows() -> list[TaskRow]:
    lines = (FIXTURE / "rows.jsonl").read_text().splitlines()
    return [TaskRow(**json.loads(line)) for line in lines if line.strip()]


def _dims(layers: int = 2, heads: int = 2, kv: int = 2) -> ModelDims:
    return ModelDims(layers, 8, 16, heads, kv, 4, 10)


# ------------------------------------------------------------------ the yardstick's pieces
def test_areas_are_mibs_trapezoids_over_the_raw_percentages() -> None:
    faith = [0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 1.1, 1.0]
    under = sum(
        (PERCENTAGES[i + 1] - PERCENTAGES[i]) * (faith[i] + faith[i + 1]) / 2 for i in range(9)
    )
    from_1 = sum(
        (PERCENTAGES[i + 1] - PERCENTAGES[i]) * (abs(1 - faith[i]) + abs(1 - faith[i + 1])) / 2
        for i in range(9)
    )
    got = areas(faith)
    assert got["area_under"] == pytest.approx(under) and got["area_from_1"] == pytest.approx(from_1)
    assert areas([1.0] * 10)["area_from_1"] == 0.0  # the full model everywhere: CMD 0
    assert areas([1.0] * 10)["area_under"] == pytest.approx(PERCENTAGES[-1] - PERCENTAGES[0])
    assert [n_for(p, 823) for p in PERCENTAGES] == [0, 1, 4, 8, 16, 41, 82, 164, 411, 823]


def test_top_n_puts_inf_first_nan_at_the_bottom_and_breaks_ties_in_storage_order() -> None:
    values = [0.5, math.inf, 0.5, float("nan"), 2.0, 0.5]
    assert top_n(values, 2).nonzero().flatten().tolist() == [1, 4]
    assert top_n(values, 4).nonzero().flatten().tolist() == [0, 1, 2, 4]  # first two 0.5s
    assert top_n(values, 6).all()


def test_prune_keeps_only_what_connects_input_and_logits() -> None:
    graph = build_graph(_dims())
    index = NodeIndex.of(graph)
    edges = list(graph.edges)

    def keep(*names: str) -> torch.Tensor:
        k = torch.zeros(len(edges), dtype=torch.bool)
        for n in names:
            k[edges.index(n)] = True
        return k

    def kept(mask: torch.Tensor) -> set[str]:
        return {edges[i] for i in mask.nonzero().flatten().tolist()}

    chain = ("Resid Start->A0.1.Q", "A0.1->MLP 1", "MLP 1->Resid End")
    assert kept(prune(index, keep(*chain))) == set(chain)
    # a head read by nothing, a head fed by nothing, an MLP with no way out: all pruned
    dangling = ("Resid Start->A1.0.V", "A0.0->MLP 0", "Resid Start->MLP 0")
    assert kept(prune(index, keep(*chain, *dangling))) == set(chain)
    # removing the chain's middle removes the whole chain (to the fixed point)
    assert kept(prune(index, keep(chain[0], chain[2]))) == {"Resid Start->A0.1.Q"} - {
        "Resid Start->A0.1.Q"
    }  # Resid Start → A0.1 has nowhere to go; MLP 1 is fed by nothing
    # an edge straight from the input to the logits needs nothing else
    assert kept(prune(index, keep("Resid Start->Resid End"))) == {"Resid Start->Resid End"}


def test_prune_under_gqa_feeds_a_kv_input_to_every_head_of_its_group() -> None:
    graph = build_graph(_dims(heads=4, kv=2))
    index = NodeIndex.of(graph)
    edges = list(graph.edges)
    k = torch.zeros(len(edges), dtype=torch.bool)
    for n in ("Resid Start->A0.0.K", "A0.1->Resid End"):  # KV head 0 serves heads 0 and 1
        k[edges.index(n)] = True
    assert torch.equal(prune(index, k), k)


def test_importance_is_minus_the_signed_score_or_the_unsigned_one() -> None:
    base = dict(model="m", task="t", edges=("a", "b", "c"), circuits=(), n_forward=1,
                n_backward=0, seconds=0.0, n_prompts=1, n_prompts_available=1, params={},
                metric_values={})  # fmt: skip
    eap = CircuitArtifact(method="eap", scores=(1.0, 2.0, 3.0), score_kind="abs_attribution",
                          details={"signed_scores": [1.0, -2.0, 3.0]}, **base)  # fmt: skip
    assert importance(eap, signed=True) == [-1.0, 2.0, -3.0]
    assert importance(eap, signed=False) == [1.0, 2.0, 3.0]
    sweep = CircuitArtifact(method="acdc", scores=(0.1, math.inf, 0.0), score_kind="prune_tau",
                            details={}, **base)  # fmt: skip
    assert importance(sweep, signed=True) == importance(sweep, signed=False) == [0.1, math.inf, 0.0]


def test_mib_names() -> None:
    assert mib_edge_name("A0.1->A1.2.Q") == "a0.h1->a1.h2<q>"
    assert mib_edge_name("Resid Start->MLP 0") == "input->m0"
    assert mib_edge_name("MLP 2->Resid End") == "m2->logits"


# ------------------------------------------------------------------ against MIB's code
def test_the_fixture_graph_is_mibs(peer: dict) -> None:
    lm = load_model(FIXTURE)
    assert sorted(patchable(lm, kv_edges="query_head").graph.edges) == sorted(peer["edges"])
    assert len(patchable(lm).graph.edges) < len(peer["edges"])  # per KV head: fewer edges


@pytest.mark.parametrize("peer_method", list(PEER_METHODS))
def test_eap_and_eap_ig_scores_equal_mibs(
    peer: dict, rows: list[TaskRow], peer_method: str
) -> None:
    lm = load_model(FIXTURE)
    pm = patchable(lm, kv_edges="query_head")
    train = [r for r in rows if r.split == "train"]
    ctx = prepare(pm, encode_rows(train, lm.tokenizer), "resample")
    ig = {"eap": "masks", "eap_ig_inputs": "inputs", "eap_ig_activations": "activations"}
    steps = 1 if peer_method == "EAP" else peer["ig_steps"]
    res = edge_attribution(ctx, EAPConfig(ig_steps=steps, ig=ig[PEER_METHODS[peer_method]]))
    ours = dict(zip(res.edges, res.scores, strict=True))
    b = peer["attr_batch_size"]
    theirs = torch.tensor(peer["scores"][peer_method])
    mine = torch.tensor([-ours[e] / b for e in peer["edges"]])  # the peer's sign and scale
    assert float(torch.corrcoef(torch.stack([mine, theirs]))[0, 1]) >= 0.999
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))


def test_same_edge_sets_give_mibs_faithfulness(peer: dict, rows: list[TaskRow]) -> None:
    lm = load_model(FIXTURE)
    pm = patchable(lm, kv_edges="query_head")
    test = [r for r in rows if r.split == "test"]
    ctx = prepare(pm, encode_rows(test, lm.tokenizer), "resample")
    index = NodeIndex.of(pm.graph)
    pos = [pm.graph.edges.index(e) for e in peer["edges"]]
    for name, curve in peer["curves"].items():
        masks = [torch.zeros(len(pos)), torch.ones(len(pos))]
        for unpruned, pruned in zip(curve["kept_topn_unpruned"], curve["kept_pruned"], strict=True):
            keep = torch.zeros(len(pos), dtype=torch.bool)
            keep[[pos[i] for i in unpruned]] = True
            want = torch.zeros(len(pos), dtype=torch.bool)
            want[[pos[i] for i in pruned]] = True
            assert torch.equal(prune(index, keep), want), name  # MIB's prune
            masks.append((~want).float())
        ld = run_masks(ctx, torch.stack(masks), 4)[:, 1].tolist()
        faith = [(v - ld[1]) / (ld[0] - ld[1]) for v in ld[2:]]
        assert faith == pytest.approx(curve["faithfulness"], abs=1e-5), name


def test_the_stage_gives_mibs_cpr_and_cmd(peer: dict, rows: list[TaskRow]) -> None:
    """discover → evaluate, as the pipeline runs them, on the per-query-head graph."""
    lm = load_model(FIXTURE)
    cfg = AcdcConfig(kv_edges="query_head", methods=list(PEER_METHODS.values()))
    arts = [discover_artifact(lm, rows, cfg, m) for m in cfg.methods]
    report = evaluate_circuits(lm, rows, arts, cfg)
    EdgeEvaluation.model_validate(report)
    for peer_method, method in PEER_METHODS.items():
        got = report["mib"]["methods"][method]
        assert got["cpr"] == pytest.approx(peer["curves"][f"peer:{peer_method}:abs=False"]["area_under"], abs=1e-4)  # fmt: skip
        assert got["cmd"] == pytest.approx(peer["curves"][f"peer:{peer_method}:abs=True"]["area_from_1"], abs=1e-4)  # fmt: skip
    random = report["mib"]["random"]
    assert random["cpr_mean"] is not None and random["cpr_ci"] > 0


def test_export_is_mibs_json_with_the_scores_ranked_as_mib_ranks_them(
    rows: list[TaskRow], tmp_path: Path
) -> None:
    lm = load_model(FIXTURE)
    cfg = AcdcConfig(kv_edges="query_head")
    art = discover_artifact(lm, rows, cfg, "eap")
    out = to_mib_json(art, d_model=32, reference_tau=0.01)
    assert out["cfg"] == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 32}
    assert len(out["edges"]) == len(art.edges)
    assert set(out["nodes"]) == {"input", "logits", "m0", "m1"} | {
        f"a{layer}.h{h}" for layer in range(2) for h in range(4)
    }
    signed = dict(zip(art.edges, art.details["signed_scores"], strict=True))
    for edge, entry in out["edges"].items():
        assert entry["score"] == pytest.approx(-signed[_from_mib(edge)])
    with pytest.raises(ConfigError, match="kv_edges: query_head"):
        to_mib_json(discover_artifact(lm, rows, AcdcConfig(), "eap"), d_model=32, reference_tau=0.01)  # fmt: skip


def _from_mib(edge: str) -> str:
    """The inverse of `mib_edge_name` (for the test)."""
    names = {"input": "Resid Start", "logits": "Resid End"}

    def node(n: str) -> str:
        if n in names:
            return names[n]
        if n.startswith("m"):
            return f"MLP {n[1:]}"
        layer, head = n[1:].split(".h")
        return f"A{layer}.{head}"

    src, dst = edge.split("->")
    qkv = ""
    if dst.endswith(">"):
        dst, qkv = dst[:-3], "." + dst[-2].upper()
    return f"{node(src)}->{node(dst)}{qkv}"
