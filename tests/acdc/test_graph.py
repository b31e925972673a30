"""The edge graph: node and edge names, counts, storage layout, ACDC order."""

from __future__ import annotations

import pytest
import torch

from circuitlab.acdc import RESID_END, RESID_START, acdc_order, build_graph
from circuitlab.errors import ConfigError, ModelError
from circuitlab.models.adapters import ModelDims


def _dims(n_layers: int = 2, n_heads: int = 4, n_kv: int = 2) -> ModelDims:
    return ModelDims(n_layers, 32, 64, n_heads, n_kv, 8, 64)


def _expected_edges(n_layers: int, n_heads: int, n_kv: int) -> set[str]:
    """Every (source, destination) pair where the source comes first, by brute force."""
    sources = [(RESID_START, -1, 0)]  # (name, block, stage: 0 attn-out, 1 mlp-out)
    for layer in range(n_layers):
        sources += [(f"A{layer}.{h}", layer, 0) for h in range(n_heads)] + [
            (f"MLP {layer}", layer, 1)
        ]
    dests = []  # (name, block, stage: 0 attn-in, 1 mlp-in)
    for layer in range(n_layers):
        dests += [(f"A{layer}.{h}.Q", layer, 0) for h in range(n_heads)]
        dests += [(f"A{layer}.{g}.{kv}", layer, 0) for g in range(n_kv) for kv in "KV"]
        dests.append((f"MLP {layer}", layer, 1))
    dests.append((RESID_END, n_layers, 0))
    return {
        f"{s}->{d}"
        for s, sb, ss in sources
        for d, db, ds in dests
        if sb < db or (sb == db and ss == 0 and ds == 1)
    }


@pytest.mark.parametrize(("n_layers", "n_heads", "n_kv"), [(2, 4, 2), (3, 2, 2), (1, 4, 1)])
def test_edges_are_every_earlier_source_to_later_destination(
    n_layers: int, n_heads: int, n_kv: int
) -> None:
    graph = build_graph(_dims(n_layers, n_heads, n_kv))
    assert set(graph.edges) == _expected_edges(n_layers, n_heads, n_kv)
    assert len(set(graph.edges)) == graph.n_edges
    assert len(graph.sources) == 1 + n_layers * (n_heads + 1)
    assert len(graph.dests) == n_layers * (n_heads + 2 * n_kv + 1) + 1
    for i, name in enumerate(graph.edges):
        assert graph.edge_index(name) == i
        src, dst = name.split("->")
        assert graph.sources[int(graph.edge_src[i])] == src
        assert graph.dests[int(graph.edge_dst[i])] == dst
        assert graph.dest_sources[int(graph.edge_dst[i])] == tuple(
            range(len(graph.dest_sources[int(graph.edge_dst[i])]))
        )


def test_storage_order_is_contiguous_dense_blocks() -> None:
    graph = build_graph(_dims())
    assert graph.edges[0] == "Resid Start->A0.0.Q"
    assert graph.edges[-1] == "MLP 1->Resid End"
    offset = 0
    for block in graph.blocks:
        assert block.offset == offset
        names = graph.edges[block.offset : block.stop]
        dests = [n.split("->")[1] for n in names]
        srcs = [n.split("->")[0] for n in names]
        for r in range(block.n_dests):
            row = slice(r * block.n_sources, (r + 1) * block.n_sources)
            assert len(set(dests[row])) == 1
            assert srcs[row] == list(graph.sources[: block.n_sources])
        offset = block.stop
    assert offset == graph.n_edges
    attn1 = graph.attn_block(1)
    first_dests = [graph.edges[attn1.offset + r * attn1.n_sources] for r in range(attn1.n_dests)]
    assert [d.split("->")[1] for d in first_dests] == [
        "A1.0.Q", "A1.1.Q", "A1.2.Q", "A1.3.Q", "A1.0.K", "A1.1.K", "A1.0.V", "A1.1.V",
    ]  # fmt: skip


def test_acdc_order_is_destination_layer_descending() -> None:
    graph = build_graph(_dims())
    order = [graph.edges[i] for i in acdc_order(graph)]
    assert sorted(order) == sorted(graph.edges)
    dests = [name.split("->")[1] for name in order]
    n_end = len(graph.sources)
    assert set(dests[:n_end]) == {RESID_END}
    assert set(dests[n_end : n_end + 10]) == {"MLP 1"}
    assert dests[n_end + 10] == "A1.0.Q"
    assert order[0] == "Resid Start->Resid End"  # sources ascending inside a destination
    layers = graph.edge_graph_layer[acdc_order(graph)]
    assert bool((layers[:-1] >= layers[1:]).all())


def test_masks_and_lookups() -> None:
    graph = build_graph(_dims())
    names = ["A0.1->MLP 1", "Resid Start->A1.1.V"]
    mask = graph.mask(names)
    assert mask.sum() == 2 and sorted(graph.edge_names(mask)) == sorted(names)
    head = graph.source_index("A1.2")
    assert head == graph.head_source(1, 2)
    out = [graph.edges[i] for i in graph.edges_from(head).tolist()]
    assert out == ["A1.2->MLP 1", "A1.2->Resid End"]
    assert graph.edge_block_layer[graph.edge_index("A0.1->MLP 1")] == 1
    assert graph.edge_block_layer[graph.edge_index("MLP 1->Resid End")] == 2
    with pytest.raises(ConfigError, match="no edge"):
        graph.edge_index("A9.9->Resid End")
    with pytest.raises(ConfigError, match="no source"):
        graph.source_index("A9.9")
    with pytest.raises(ConfigError, match="out of range"):
        graph.mask([graph.n_edges])
    with pytest.raises(ModelError, match="multiple"):
        build_graph(_dims(n_heads=4, n_kv=3))
    assert torch.equal(graph.mask(), torch.zeros(graph.n_edges))


def test_every_node_name_parses_to_its_place() -> None:
    """`Node.parse` is the one reader of node names (artifacts, the report, TL export)."""
    from circuitlab.acdc.graph import Node

    graph = build_graph(_dims())
    for e, layer in zip(graph.edges, graph.edge_graph_layer.tolist(), strict=True):
        src, dst = (Node.parse(n) for n in e.split("->"))
        assert src.kind in {"resid_start", "head", "mlp"}
        assert dst.kind in {"input", "mlp", "resid_end"}
        assert dst.graph_layer(graph.n_layers) == layer
        assert src.graph_layer(graph.n_layers) < layer
    assert Node.parse("A1.0.K") == Node("input", 1, 0, "K")
    with pytest.raises(ConfigError, match="not a node"):
        Node.parse("A1.x")
