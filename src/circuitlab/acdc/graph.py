"""The computational graph that ACDC, EAP and head pruning patch: sources, destinations, edges.

Nodes follow auto-circuit's names (and so do edges, ``"{src}->{dst}"``):

* **sources** — ``Resid Start`` (token + position embeddings), every attention head's output
  ``A{l}.{h}`` (its share of the output projection, without the projection bias) and every
  MLP's output ``MLP {l}``;
* **destinations** — every query head's input ``A{l}.{h}.Q``, every key/value head's inputs
  ``A{l}.{g}.K`` and ``A{l}.{g}.V`` (``g < n_kv_heads``: with grouped-query attention K and V
  are per KV head), every MLP's input ``MLP {l}`` and the unembedding's input ``Resid End``.

A source feeds a destination when it comes before it: sources of blocks ``< l`` feed the
attention inputs of block ``l``, and the heads of block ``l`` also feed ``MLP {l}`` (attention
then MLP inside a block; not in models whose attention and MLP run in parallel, `build_graph`). Every destination therefore reads a *prefix* of the source order,
which the patch layer uses to turn masks into dense tensors.

**Storage order** (the index of an edge, the layout of a flat mask): destinations in forward
order — for each block ``l``: ``A{l}.0.Q … A{l}.{H-1}.Q``, ``A{l}.0.K … A{l}.{G-1}.K``,
``A{l}.0.V … A{l}.{G-1}.V``, ``MLP {l}``; then ``Resid End`` — and inside a destination its
sources in source order (``Resid Start``, then per block its heads and its MLP). The edges of
one *block group* (all attention destinations of a block; one MLP; ``Resid End``) are a
contiguous row-major ``[n_dests, n_sources]`` slice of a flat mask.

**Graph layers** are auto-circuit's: ``Resid Start`` 0, the heads and attention destinations of
block ``l`` ``2l + 1``, ``MLP {l}`` ``2l + 2``, ``Resid End`` ``2L + 1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from circuitlab.errors import ConfigError, ModelError
from circuitlab.models.adapters import ModelDims

RESID_START = "Resid Start"
RESID_END = "Resid End"
NodeKind = Literal["resid_start", "head", "input", "mlp", "resid_end"]
_NODE = re.compile(r"^(?:A(\d+)\.(\d+)(?:\.([QKV]))?|MLP (\d+))$")


@dataclass(frozen=True)
class Node:
    """A node name of the graph, parsed — the one reader of the names (module doc):
    ``head`` ``A{l}.{h}`` (a source), ``input`` ``A{l}.{h}.{Q|K|V}`` (a destination; ``h`` is
    the KV head for K and V), ``mlp`` ``MLP {l}`` (both), and the two residual ends."""

    kind: NodeKind
    layer: int | None = None
    head: int | None = None
    qkv: str | None = None

    @classmethod
    def parse(cls, name: str) -> Node:
        if name == RESID_START:
            return cls("resid_start")
        if name == RESID_END:
            return cls("resid_end")
        m = _NODE.match(name)
        if m is None:
            raise ConfigError(f"{name!r} is not a node of circuitlab's edge graph")
        if m[4] is not None:
            return cls("mlp", int(m[4]))
        return cls("input" if m[3] else "head", int(m[1]), int(m[2]), m[3])

    def graph_layer(self, n_layers: int) -> int:
        """auto-circuit's graph layer (Resid Start 0, block l's heads and inputs 2l+1, its MLP
        2l+2, Resid End 2L+1)."""
        if self.kind == "resid_start":
            return 0
        if self.kind == "resid_end":
            return 2 * n_layers + 1
        assert self.layer is not None
        return 2 * self.layer + (2 if self.kind == "mlp" else 1)


@dataclass(frozen=True)
class Block:
    """One block group of destinations whose edges form a dense ``[n_dests, n_sources]`` slice
    of the flat edge order, starting at ``offset``. ``kind`` is "attn", "mlp" or "end";
    ``layer`` is the transformer block (``n_layers`` for ``Resid End``)."""

    kind: str
    layer: int
    offset: int
    n_dests: int
    n_sources: int

    @property
    def n_edges(self) -> int:
        return self.n_dests * self.n_sources

    @property
    def stop(self) -> int:
        return self.offset + self.n_edges


@dataclass(frozen=True, eq=False)
class Graph:
    """Sources, destinations and edges of one model's graph, in storage order (module doc)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    sources: tuple[str, ...]
    dests: tuple[str, ...]
    edges: tuple[str, ...]
    #: per destination, the indices of its sources (always ``range(n)`` for some ``n``)
    dest_sources: tuple[tuple[int, ...], ...]
    #: edge → source index / destination index, ``[n_edges]`` long tensors
    edge_src: Tensor = field(repr=False)
    edge_dst: Tensor = field(repr=False)
    blocks: tuple[Block, ...] = field(repr=False)

    # ----------------------------------------------------------------- lookups
    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @cached_property
    def _edge_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.edges)}

    @cached_property
    def _source_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.sources)}

    def edge_index(self, name: str) -> int:
        """The storage index of edge ``"{src}->{dst}"``; ConfigError naming the fix if absent."""
        try:
            return self._edge_ids[name]
        except KeyError:
            raise ConfigError(
                f"no edge {name!r} in this {self.n_layers}-layer graph; edges are named "
                f"'{{src}}->{{dst}}', e.g. {self.edges[0]!r} or {self.edges[-1]!r}"
            ) from None

    def source_index(self, name: str) -> int:
        """The index of a source node (``Resid Start``, ``A{l}.{h}``, ``MLP {l}``)."""
        try:
            return self._source_ids[name]
        except KeyError:
            raise ConfigError(
                f"no source node {name!r}; sources are 'Resid Start', 'A{{l}}.{{h}}', 'MLP {{l}}'"
            ) from None

    def head_source(self, layer: int, head: int) -> int:
        """The source index of head ``A{layer}.{head}``."""
        return head_source_index(layer, head, self.n_heads)

    def mlp_source(self, layer: int) -> int:
        """The source index of ``MLP {layer}``."""
        return mlp_source_index(layer, self.n_heads)

    def edges_from(self, source: int) -> Tensor:
        """Storage indices of every edge leaving source ``source``."""
        return (self.edge_src == source).nonzero().flatten()

    def attn_block(self, layer: int) -> Block:
        return self.blocks[2 * layer]

    def mlp_block(self, layer: int) -> Block:
        return self.blocks[2 * layer + 1]

    @property
    def end_block(self) -> Block:
        return self.blocks[-1]

    @cached_property
    def edge_block_layer(self) -> Tensor:
        """Per edge, the transformer block of its destination (``n_layers`` for Resid End):
        a forward may resume at block ``l`` when no edge with a value ``< l`` is patched."""
        out = torch.empty(self.n_edges, dtype=torch.long)
        for b in self.blocks:
            out[b.offset : b.stop] = b.layer
        return out

    @cached_property
    def edge_graph_layer(self) -> Tensor:
        """Per edge, auto-circuit's layer of its destination (module doc)."""
        out = torch.empty(self.n_edges, dtype=torch.long)
        for b in self.blocks:
            out[b.offset : b.stop] = {"attn": 2 * b.layer + 1, "mlp": 2 * b.layer + 2}.get(
                b.kind, 2 * self.n_layers + 1
            )
        return out

    # ------------------------------------------------------------------ masks
    def mask(self, edges: Iterable[str | int] = ()) -> Tensor:
        """A float ``[n_edges]`` mask, 1.0 on the given edges (names or storage indices)."""
        out = torch.zeros(self.n_edges)
        idx = [self.edge_index(e) if isinstance(e, str) else int(e) for e in edges]
        bad = [i for i in idx if not 0 <= i < self.n_edges]
        if bad:
            raise ConfigError(f"edge indices {bad[:5]} out of range [0, {self.n_edges})")
        out[idx] = 1.0
        return out

    def edge_names(self, mask: Tensor) -> list[str]:
        """Names of the edges where a ``[n_edges]`` mask is non-zero, in storage order."""
        return [self.edges[i] for i in mask.flatten().nonzero().flatten().tolist()]


# ---------------------------------------------------------------------- naming
def head_source_index(layer: int, head: int, n_heads: int) -> int:
    return 1 + layer * (n_heads + 1) + head


def mlp_source_index(layer: int, n_heads: int) -> int:
    return 1 + layer * (n_heads + 1) + n_heads


def build_graph(dims: ModelDims, *, parallel: bool = False) -> Graph:
    """The graph of a model with these sizes: sequential attention → MLP blocks, or with
    ``parallel`` attention and MLP reading the same residual (GPT-NeoX, Phi, GPT-J; the
    TransformerLens backend), where block ``l``'s heads do not feed ``MLP {l}``."""
    n_layers, n_heads, n_kv = dims.n_layers, dims.n_heads, dims.n_kv_heads
    if n_layers < 1 or n_heads < 1 or n_kv < 1 or n_heads % n_kv:
        raise ModelError(
            f"cannot build a graph for {n_layers} layers, {n_heads} heads, {n_kv} KV heads "
            "(n_heads must be a multiple of n_kv_heads)"
        )
    sources = [RESID_START]
    for layer in range(n_layers):
        sources += [f"A{layer}.{h}" for h in range(n_heads)] + [f"MLP {layer}"]

    dests: list[str] = []
    dest_n_in: list[int] = []
    blocks: list[Block] = []
    offset = 0

    def add_block(kind: str, layer: int, names: Sequence[str], n_in: int) -> None:
        nonlocal offset
        blocks.append(Block(kind, layer, offset, len(names), n_in))
        dests.extend(names)
        dest_n_in.extend([n_in] * len(names))
        offset += len(names) * n_in

    for layer in range(n_layers):
        n_in = head_source_index(layer, 0, n_heads)  # everything before this block
        attn = [f"A{layer}.{h}.Q" for h in range(n_heads)]
        attn += [f"A{layer}.{g}.K" for g in range(n_kv)] + [f"A{layer}.{g}.V" for g in range(n_kv)]
        add_block("attn", layer, attn, n_in)
        add_block("mlp", layer, [f"MLP {layer}"], n_in if parallel else n_in + n_heads)
    add_block("end", n_layers, [RESID_END], len(sources))

    edges, e_src, e_dst = [], [], []
    for d, (dest, n_in) in enumerate(zip(dests, dest_n_in, strict=True)):
        for s in range(n_in):
            edges.append(f"{sources[s]}->{dest}")
            e_src.append(s)
            e_dst.append(d)
    return Graph(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        sources=tuple(sources),
        dests=tuple(dests),
        edges=tuple(edges),
        dest_sources=tuple(tuple(range(n)) for n in dest_n_in),
        edge_src=torch.tensor(e_src, dtype=torch.long),
        edge_dst=torch.tensor(e_dst, dtype=torch.long),
        blocks=tuple(blocks),
    )


#: ``acdc.edge_order`` values: how sequential ACDC orders the edges of one destination layer.
EDGE_ORDERS: tuple[str, ...] = ("circuitlab", "autocircuit")


def acdc_order(graph: Graph, edge_order: str = "circuitlab") -> list[int]:
    """The order in which sequential ACDC visits edges (storage indices).

    Both orders go by destination graph layer descending (auto-circuit's
    ``sorted(edges, key=dest.layer, reverse=True)``): the edges into ``Resid End``, then into
    ``MLP {L-1}``, then into the attention inputs of block ``L-1``, and so on. Inside one
    destination layer:

    * ``"circuitlab"`` (the default) — storage order: every Q head, then every K, then every V
      head; for one destination its sources earliest first;
    * ``"autocircuit"`` — the peer harness's canonical order of auto-circuit 1.0.1 (whose own
      tie order is Python set iteration order, not reproducible): head by head, ``Q`` before
      ``K`` before ``V`` (with grouped-query attention ``A{l}.{g}.K``/``V`` sit with query
      head ``g``), for one destination its sources *latest* first.

    ACDC is greedy, so the two orders can keep different circuits at the same τ (see
    docs/library.md, "Edge order").
    """
    if edge_order not in EDGE_ORDERS:
        raise ConfigError(
            f"edge order {edge_order!r} is unknown; choose one of {list(EDGE_ORDERS)}"
        )
    layers = graph.edge_graph_layer.tolist()
    if edge_order == "circuitlab":
        return sorted(range(graph.n_edges), key=lambda i: -layers[i])
    rank = [_autocircuit_dest_rank(name) for name in graph.dests]
    dst, src = graph.edge_dst.tolist(), graph.edge_src.tolist()
    return sorted(range(graph.n_edges), key=lambda i: (-layers[i], rank[dst[i]], -src[i]))


def _autocircuit_dest_rank(dest: str) -> tuple[int, int]:
    """(head, Q/K/V) of an attention input; (-1, -1) for an MLP input and ``Resid End``."""
    head, _, letter = dest.rpartition(".")
    if letter not in ("Q", "K", "V"):
        return (-1, -1)
    return (int(head.rsplit(".", 1)[1]), "QKV".index(letter))
