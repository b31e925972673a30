"""MIB's circuit-localization yardstick (Mueller et al. 2025) for every edge method: circuits at
fixed shares of the graph's edges, the faithfulness of each, and the areas under that curve.

For each method and each of MIB's percentages ``p`` (0.1 % … 100 %, `PERCENTAGES`), the
circuit is the top ``int(p · E)`` edges by the method's importance, then *pruned* as MIB's
``Graph.prune`` does: a node stays only while it has an outgoing edge and an incoming one
(``Resid Start`` always counts as fed, ``Resid End`` always as read), and an edge only while
both its ends stay — repeated to a fixed point, so what is evaluated is the part of the top-n
that connects the input to the logits. Its faithfulness is
``(LD(circuit) − LD(all patched)) / (LD(clean) − LD(all patched))`` (LD: the logit
difference averaged over the test prompts, MIB's normalisation), and

* **CPR** — area under the faithfulness curve of the *signed* ranking (edges that push the
  behaviour first), trapezoids over the raw percentages (MIB's ``area_under``; higher is
  better);
* **CMD** — area under ``|1 − faithfulness|`` of the ``|importance|`` ranking (MIB's
  ``area_from_1``; lower is better).

Importance, in MIB's sign (higher = the edge supports the behaviour): an attribution method's
``−signed score`` (circuitlab's score estimates metric(patched) − metric(clean),
`circuitlab.acdc.eap`); a τ sweep's prune score; head pruning's ``|Δ|`` (these two are
unsigned, so both rankings are the same). Ties (a sweep's never-removed edges, all ``inf``)
are broken in storage order — MIB's ``argsort`` leaves them unspecified.

The same curve for ``random_seeds`` random edge sets per size (uniform, pruned alike) gives a
baseline CPR and CMD with 95 % t intervals over the seeds. With grouped-query attention the
graph's K/V inputs are per KV head (circuitlab's default), so the curves are comparable with
MIB's published ones only on the multi-head copy of a model or with the per-query-head graph.
No torch at import beyond what the graph needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from circuitlab.acdc.artifact import CircuitArtifact
from circuitlab.acdc.graph import Graph, head_source_index, mlp_source_index
from circuitlab.stats import t_interval

if TYPE_CHECKING:
    from circuitlab.acdc.settings import AcdcConfig

#: MIB_circuit_track/evaluation.py, evaluate_area_under_curve's percentages
PERCENTAGES: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: the keys of a curve in the metrics (`by_size`)
SIZE_KEYS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(len(PERCENTAGES)))


def n_for(pct: float, n_edges: int) -> int:
    """MIB's circuit size at ``pct``: ``int(pct · n_edges)`` (0 edges below 1/E)."""
    return int(pct * n_edges)


def importance(art: CircuitArtifact, *, signed: bool) -> list[float]:
    """Per edge (storage order), MIB's importance (module doc); ``|·|`` unless ``signed``."""
    raw = art.details.get("signed_scores")
    values = [-float(s) for s in raw] if raw is not None else list(art.scores)
    return values if signed else [abs(v) for v in values]


def order(values: Sequence[float]) -> Tensor:
    """Edge indices from the largest value down (``inf`` above every finite one; ties in
    storage order; NaN counts as −inf)."""
    v = torch.tensor(values, dtype=torch.float64)
    v = torch.where(torch.isnan(v), torch.full_like(v, -math.inf), v)
    return torch.sort(v, descending=True, stable=True).indices


def top_n(values: Sequence[float], n: int, ranked: Tensor | None = None) -> Tensor:
    """``[E]`` bool: the ``n`` largest values (`order`; pass ``ranked`` to reuse one)."""
    ranked = order(values) if ranked is None else ranked
    keep = torch.zeros(len(values), dtype=torch.bool)
    keep[ranked[:n]] = True
    return keep


@dataclass(frozen=True, eq=False)
class NodeIndex:
    """The graph's edges as (parent node, child node) indices over its sources, for pruning:
    a destination belongs to the source node it feeds (``A{l}.{g}.K`` under grouped-query
    attention to every head of KV group ``g``; ``Resid End`` to none)."""

    parent: Tensor  # [E] source index
    child_heads: Tensor  # [E, n_sources] bool: the source nodes the edge's destination feeds
    feeds: Tensor  # [n_dests, n_sources] bool: destination → the source nodes it feeds
    is_end: Tensor  # [E] bool: into Resid End

    @classmethod
    def of(cls, graph: Graph) -> NodeIndex:
        n_src, n_dst = len(graph.sources), len(graph.dests)
        feeds = torch.zeros(n_dst, n_src, dtype=torch.bool)
        per = graph.n_heads // graph.n_kv_heads
        index = {d: i for i, d in enumerate(graph.dests)}
        for layer in range(graph.n_layers):
            for h in range(graph.n_heads):
                src = head_source_index(layer, h, graph.n_heads)
                feeds[index[f"A{layer}.{h}.Q"], src] = True
                g = h // per
                feeds[index[f"A{layer}.{g}.K"], src] = True
                feeds[index[f"A{layer}.{g}.V"], src] = True
            feeds[index[f"MLP {layer}"], mlp_source_index(layer, graph.n_heads)] = True
        dst = graph.edge_dst
        is_end = torch.tensor([d == len(graph.dests) - 1 for d in dst.tolist()])
        return cls(graph.edge_src, feeds[dst], feeds, is_end)


def prune(index: NodeIndex, keep: Tensor) -> Tensor:
    """MIB's ``Graph.prune`` on a kept-edge set ``[E]`` bool (module doc), to its fixed point."""
    keep = keep.clone()
    n_src = index.feeds.shape[1]
    while True:
        has_out = torch.zeros(n_src, dtype=torch.bool)
        has_out[index.parent[keep]] = True
        has_in = index.child_heads[keep].any(0)
        has_in[0] = True  # Resid Start
        alive = has_out & has_in
        new = keep & alive[index.parent] & (index.is_end | (index.child_heads & alive).any(1))
        if torch.equal(new, keep):
            return keep
        keep = new


def areas(
    faithfulness: Sequence[float], percentages: Sequence[float] = PERCENTAGES
) -> dict[str, float]:
    """MIB's ``area_under`` (CPR), ``area_from_1`` (CMD) and the plain average of a curve:
    trapezoids over the raw percentages."""
    under = from_1 = 0.0
    for i in range(len(faithfulness) - 1):
        dx = percentages[i + 1] - percentages[i]
        a, b = faithfulness[i], faithfulness[i + 1]
        under += dx * (a + b) / 2
        from_1 += dx * (abs(1 - a) + abs(1 - b)) / 2
    average = sum(faithfulness) / len(faithfulness)
    return {"area_under": under, "area_from_1": from_1, "average": average}


def method_sets(
    index: NodeIndex, art: CircuitArtifact, percentages: Sequence[float] = PERCENTAGES
) -> dict[str, list[Tensor]]:
    """The pruned circuits of one method at each percentage: ``signed`` (CPR's ranking) and
    ``abs`` (CMD's), ``[E]`` bool each."""
    n_edges = len(art.edges)
    out: dict[str, list[Tensor]] = {}
    for kind, signed in (("signed", True), ("abs", False)):
        values = importance(art, signed=signed)
        ranked = order(values)
        out[kind] = [prune(index, top_n(values, n_for(p, n_edges), ranked)) for p in percentages]
    return out


def random_sets(
    index: NodeIndex,
    n_edges: int,
    seeds: int,
    seed: int,
    percentages: Sequence[float] = PERCENTAGES,
) -> list[list[Tensor]]:
    """Per seed, a random circuit (uniform over edges, then pruned) at each percentage."""
    out = []
    for s in range(seeds):
        g = torch.Generator().manual_seed(seed * 1_000_003 + s * 10_007 + 7)
        order = torch.randperm(n_edges, generator=g)
        row = []
        for p in percentages:
            keep = torch.zeros(n_edges, dtype=torch.bool)
            keep[order[: n_for(p, n_edges)]] = True
            row.append(prune(index, keep))
        out.append(row)
    return out


@dataclass(frozen=True)
class CurveSets:
    """Every edge set MIB's evaluation of some methods needs, flat (``keep``, ``[E]`` bool
    each): per method its signed then its abs curve, then ``seeds`` random curves."""

    methods: tuple[str, ...]
    n_edges: int
    seeds: int
    keep: tuple[Tensor, ...]

    def report(self, faith: Sequence[float | None], cfg: AcdcConfig) -> dict[str, Any]:
        """The ``mib`` section of the evaluation from the faithfulness of each set (in
        ``keep``'s order; None where the normalisation is undefined)."""
        k = len(PERCENTAGES)
        kept = [int(m.sum()) for m in self.keep]

        def curve(i: int) -> tuple[list[float | None], list[int]]:
            return list(faith[i * k : (i + 1) * k]), kept[i * k : (i + 1) * k]

        def area(values: list[float | None], key: str) -> float | None:
            if any(v is None for v in values):
                return None
            return areas([float(v) for v in values if v is not None])[key]

        methods: dict[str, Any] = {}
        for j, method in enumerate(self.methods):
            signed, kept_signed = curve(2 * j)
            absolute, kept_abs = curve(2 * j + 1)
            methods[method] = {
                "cpr": area(signed, "area_under"),
                "cmd": area(absolute, "area_from_1"),
                "faithfulness_signed": by_size(signed),
                "faithfulness_abs": by_size(absolute),
                "n_kept_signed": by_size(kept_signed),
                "n_kept_abs": by_size(kept_abs),
            }
        base = 2 * len(self.methods)
        rand = [curve(base + s)[0] for s in range(self.seeds)]
        random: dict[str, Any] = {
            "cpr_mean": None, "cpr_ci": None, "cmd_mean": None, "cmd_ci": None,
            "faithfulness_mean": by_size([None] * k), "faithfulness_ci": by_size([None] * k),
        }  # fmt: skip
        if rand and all(v is not None for r in rand for v in r):
            full = [[float(v) for v in r if v is not None] for r in rand]
            cpr = t_interval([areas(r)["area_under"] for r in full])
            cmd = t_interval([areas(r)["area_from_1"] for r in full])
            random["cpr_mean"], random["cpr_ci"] = cpr
            random["cmd_mean"], random["cmd_ci"] = cmd
            per_size = [t_interval([r[i] for r in full]) for i in range(k)]
            random["faithfulness_mean"] = by_size([m for m, _ in per_size])
            random["faithfulness_ci"] = by_size([c for _, c in per_size])
        return {
            "sizes": {
                key: {"percent": 100 * p, "n_requested": n_for(p, self.n_edges)}
                for key, p in zip(SIZE_KEYS, PERCENTAGES, strict=True)
            },
            "methods": methods,
            "random": random,
        }


def by_size(values: Sequence[Any]) -> dict[str, Any]:
    """A curve as a metrics dict: ``{"00": value at 0.1 %, …, "09": at 100 %}``."""
    return dict(zip(SIZE_KEYS, values, strict=True))


def mib_edge_sets(graph: Graph, artifacts: Sequence[CircuitArtifact], cfg: AcdcConfig) -> CurveSets:
    """The edge sets of MIB's curves for every artifact (signed, then abs) and the random
    baseline (``cfg.random_seeds`` curves, seeded by ``cfg.seed``)."""
    index = NodeIndex.of(graph)
    keep: list[Tensor] = []
    for art in artifacts:
        sets = method_sets(index, art)
        keep += sets["signed"] + sets["abs"]
    for row in random_sets(index, graph.n_edges, cfg.random_seeds, cfg.seed):
        keep += row
    methods = tuple(a.method for a in artifacts)
    return CurveSets(methods, graph.n_edges, cfg.random_seeds, tuple(keep))


def mib_node_name(node: str) -> str:
    """circuitlab's node name → EAP-IG's (``Resid Start`` → ``input``, ``A1.2`` → ``a1.h2``,
    ``MLP 3`` → ``m3``, ``Resid End`` → ``logits``)."""
    if node == "Resid Start":
        return "input"
    if node == "Resid End":
        return "logits"
    if node.startswith("MLP "):
        return f"m{int(node[4:])}"
    layer, head = node[1:].split(".")
    return f"a{int(layer)}.h{int(head)}"


def mib_edge_name(edge: str) -> str:
    """``A0.1->A1.2.Q`` → ``a0.h1->a1.h2<q>``; ``Resid Start->MLP 0`` → ``input->m0``."""
    src, dst = edge.split("->")
    qkv = ""
    if dst.startswith("A") and dst.count(".") == 2:
        dst, letter = dst.rsplit(".", 1)
        qkv = f"<{letter.lower()}>"
    return f"{mib_node_name(src)}->{mib_node_name(dst)}{qkv}"


def to_mib_json(art: CircuitArtifact, *, d_model: int, reference_tau: float) -> dict[str, Any]:
    """The artifact as MIB's circuit-submission JSON (EAP-IG's ``Graph.to_json`` layout:
    ``cfg``, ``nodes``, ``edges`` with a float ``score`` and ``in_graph`` each): scores are
    MIB's signed importance (`importance`; a sweep's never-removed ``inf`` becomes the largest
    finite score + 1, keeping the order), ``in_graph`` the reference circuit. MIB's graph has
    K/V inputs per query head, so an artifact of a grouped-query model must come from the
    per-query-head graph (``acdc.kv_edges: query_head``); ConfigError otherwise."""
    from circuitlab.errors import ConfigError

    nodes = [n for e in art.edges for n in e.split("->")]
    heads = {n.rsplit(".", 1)[0] for n in nodes if n.endswith(".Q")}
    kv = {n.rsplit(".", 1)[0] for n in nodes if n.endswith(".K")}
    if kv != heads:
        raise ConfigError(
            f"{art.method} circuit of {art.model}/{art.task}: its graph has K/V inputs per KV "
            f"head ({len(kv)} K inputs for {len(heads)} query heads over all layers); MIB's "
            "are per query head. Rediscover with acdc.kv_edges: query_head"
        )
    layers = {int(h[1:].split(".")[0]) for h in heads} | {
        int(n[4:]) for n in nodes if n.startswith("MLP ")
    }
    n_layers = max(layers) + 1
    n_heads = len(heads) // n_layers
    values = importance(art, signed=True)
    finite = [v for v in values if math.isfinite(v)]
    top = (max(finite) if finite else 0.0) + 1.0
    values = [top if v == math.inf else v for v in values]
    kept = set(art.reference_circuit(reference_tau).kept)
    touched = {n for e in kept for n in e.split("->")}
    node_names = ["Resid Start"]
    for layer in range(n_layers):
        node_names += [f"A{layer}.{h}" for h in range(n_heads)] + [f"MLP {layer}"]
    node_names.append("Resid End")
    in_circuit = {n.rsplit(".", 1)[0] if n.endswith((".Q", ".K", ".V")) else n for n in touched}
    return {
        "cfg": {
            "n_layers": n_layers,
            "n_heads": n_heads,
            "parallel_attn_mlp": False,
            "d_model": int(d_model),
        },
        "nodes": {
            mib_node_name(n): {"in_graph": n in in_circuit or n in ("Resid Start", "Resid End")}
            for n in node_names
        },
        "edges": {
            mib_edge_name(e): {"score": float(v), "in_graph": e in kept}
            for e, v in zip(art.edges, values, strict=True)
        },
    }
