"""Circuits in TransformerLens 4's vocabulary, for a TL user to load in a notebook.

An edge ``src->dst`` of circuitlab's graph (`circuitlab.acdc.graph`) names a source and a
destination; in TransformerLens' `TransformerBridge` (and HookedTransformer) they are hook
points, with a head index where the hook is per head:

=================  ==========================================  ============================
circuitlab node    TL hook                                     index
=================  ==========================================  ============================
``Resid Start``    ``blocks.0.hook_resid_pre``                 –
``A{l}.{h}``       ``blocks.{l}.attn.hook_result``             head ``h`` (dim 2)
``MLP {l}`` (src)  ``blocks.{l}.hook_mlp_out``                 –
``A{l}.{h}.Q``     ``blocks.{l}.attn.hook_q_input``            head ``h`` (dim 2)
``A{l}.{g}.K/V``   ``blocks.{l}.attn.hook_k_input`` / ``_v_``  KV head ``g`` (dim 2)
``MLP {l}`` (dst)  ``blocks.{l}.hook_mlp_in``                  –
``Resid End``      ``ln_final.hook_in``                        –
=================  ==========================================  ============================

The per-head and per-input hooks exist once the bridge is told to split them
(``set_use_attn_result(True)``, ``set_use_split_qkv_input(True)``, ``set_use_hook_mlp_in(True)``;
the export lists them under ``"tl_settings"``). An edge is patched in TL by subtracting, at its
destination hook, the source's current minus its ablated output (tests/interop/ does exactly
this and gets circuitlab's circuit logits). Neuron circuits map to ``blocks.{l}.mlp.hook_post``
(the MLP's down-projection input) with the neuron index and, where the circuit has one, the
position (negative: from each prompt's end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit
from circuitlab.acdc.graph import Node
from circuitlab.errors import ArtifactError, ConfigError
from circuitlab.lrp.circuit import NeuronCircuit

FORMAT = "circuitlab.tl_export/1"
TL_SETTINGS = {"set_use_attn_result": True, "set_use_split_qkv_input": True,
               "set_use_hook_mlp_in": True}  # fmt: skip


def source_hook(name: str) -> dict[str, Any]:
    """The TL hook (and head) of one of circuitlab's source nodes."""
    node = _node(name)
    if node.kind == "resid_start":
        return {"hook": "blocks.0.hook_resid_pre", "head": None}
    if node.kind == "head":
        return {"hook": f"blocks.{node.layer}.attn.hook_result", "head": node.head}
    if node.kind == "mlp":
        return {"hook": f"blocks.{node.layer}.hook_mlp_out", "head": None}
    raise ArtifactError(f"{name!r} is not a source node of circuitlab's edge graph")


def dest_hook(name: str) -> dict[str, Any]:
    """The TL hook (and head) of one of circuitlab's destination nodes."""
    node = _node(name)
    if node.kind == "resid_end":
        return {"hook": "ln_final.hook_in", "head": None}
    if node.kind == "input" and node.qkv is not None:
        return {
            "hook": f"blocks.{node.layer}.attn.hook_{node.qkv.lower()}_input",
            "head": node.head,
        }
    if node.kind == "mlp":
        return {"hook": f"blocks.{node.layer}.hook_mlp_in", "head": None}
    raise ArtifactError(f"{name!r} is not a destination node of circuitlab's edge graph")


def _node(name: str) -> Node:
    try:
        return Node.parse(name)
    except ConfigError:
        raise ArtifactError(f"{name!r} is not a node of circuitlab's edge graph") from None


def edge_hooks(edge: str) -> dict[str, Any]:
    src, sep, dst = edge.partition("->")
    if not sep:
        raise ArtifactError(f"{edge!r} is not an edge name (`src->dst`)")
    return {"edge": edge, "src": source_hook(src), "dst": dest_hook(dst)}


def pick_circuit(
    art: CircuitArtifact, tau: float | None, label: str | None, reference_tau: float
) -> tuple[EdgeCircuit, str]:
    """One circuit of an artifact and why it was chosen: by ``label``, by its τ (``tau`` must
    be one of the sweep's, to a relative 1e-6), else the reference circuit the report draws
    (the τ nearest ``reference_tau``; a ranking's first circuit)."""
    if label is not None:
        for c in art.circuits:
            if c.label == label:
                return c, f"label {label}"
        labels = ", ".join(c.label for c in art.circuits)
        raise ArtifactError(
            f"no circuit labelled {label!r} in this {art.method} artifact: {labels}"
        )
    if tau is not None:
        taus = [c.tau for c in art.circuits]
        if any(t is None for t in taus):
            labels = ", ".join(c.label for c in art.circuits)
            raise ArtifactError(f"{art.method} circuits have no τ; choose one by --label: {labels}")
        for c in art.circuits:
            if abs(c.tau - tau) <= 1e-6 * abs(tau):  # type: ignore[operator]
                return c, f"τ = {c.tau:g}"
        raise ArtifactError(
            f"no circuit at τ = {tau:g} in this {art.method} artifact; its τ sweep: "
            + ", ".join(f"{t:g}" for t in taus)  # type: ignore[str-format]
        )
    c = art.reference_circuit(reference_tau)
    how = f"τ = {c.tau:g}, " if c.tau is not None else f"{c.label}, "
    return c, how + f"the reference circuit (acdc.reference_tau {reference_tau:g}) the report draws"


def export_kept(edges: Sequence[str], kept: Iterable[str], **about: Any) -> dict[str, Any]:
    """An edge circuit — ``kept`` among all the graph's ``edges`` — as TL hooks (the rest of
    the graph is what is patched); ``about`` (method, τ, …) is recorded as given."""
    keep = set(kept)
    unknown = sorted(keep - set(edges))
    if unknown:
        raise ArtifactError(f"kept edges not in the graph: {unknown[:5]}")
    return {
        "format": FORMAT,
        "kind": "edges",
        **about,
        "n_edges_total": len(edges),
        "tl_settings": TL_SETTINGS,
        "kept": [edge_hooks(e) for e in edges if e in keep],
        "patched": [edge_hooks(e) for e in edges if e not in keep],
    }


def export_edges(art: CircuitArtifact, circuit: EdgeCircuit) -> dict[str, Any]:
    """One circuit of a pipeline artifact (`export_kept` with the artifact's details)."""
    return export_kept(
        art.edges, circuit.kept, method=art.method, model=art.model, task=art.task,
        label=circuit.label, tau=circuit.tau, ablation=art.params.get("ablation"),
    )  # fmt: skip


def export_neurons(circuit: NeuronCircuit) -> dict[str, Any]:
    """A neuron circuit as ``hook_post`` entries: layer hook, neuron, position, attribution, and
    whether that attribution says the neuron supports the metric (``sign`` +1) or opposes it
    (−1; 0 for a zero score). The stored sign is the attribution method's (LRP's for an ``lrp``
    circuit): steering takes support from the gradient instead (`circuitlab.steering.signs`)."""
    return {
        "format": FORMAT,
        "kind": "neurons",
        "method": circuit.method,
        "model": circuit.model,
        "task": circuit.task,
        "neurons": [
            {
                "hook": f"blocks.{layer}.mlp.hook_post",
                "neuron": n,
                "position": pos,
                "score": s,
                "sign": (s > 0) - (s < 0),
            }
            for (layer, pos, n), s in sorted(circuit.neurons.items())
        ],
    }


HookFn = Callable[..., Any]


def patching_hooks(export: Mapping[str, Any], ablated: Any) -> list[tuple[str, HookFn]]:
    """TransformerLens ``fwd_hooks`` that run an exported edge circuit: every patched edge's
    destination loses (the source's output in this run − its ablated output).

    ``ablated``: the ablated source outputs, looked up by hook name — for resample ablation the
    cache of the corrupt prompts (``bridge.run_with_cache(corrupt_tokens)[1]``), for zero
    ablation a mapping whose values are zeros. The bridge needs the export's ``tl_settings``::

        for name, on in export["tl_settings"].items():
            getattr(bridge, name)(on)
        logits = bridge.run_with_hooks(tokens, fwd_hooks=patching_hooks(export, corrupt_cache))
    """
    if export.get("kind") != "edges":
        raise ArtifactError(
            "patching_hooks takes an edge export (`circuitlab export` of an edge circuit)"
        )
    current: dict[tuple[str, int | None], Tensor] = {}
    into: dict[str, list[tuple[int | None, tuple[str, int | None]]]] = {}
    for e in export["patched"]:
        src = (e["src"]["hook"], e["src"]["head"])
        into.setdefault(e["dst"]["hook"], []).append((e["dst"]["head"], src))
    sources = sorted({src for edges in into.values() for _, src in edges}, key=str)

    def ablated_of(src: tuple[str, int | None], like: Tensor) -> Tensor:
        value = ablated[src[0]]
        value = value if src[1] is None else value[:, :, src[1]]
        return value[:, : like.shape[1]]

    def record(name: str) -> HookFn:
        def hook(x: Tensor, hook: Any) -> None:
            for hook_name, head in sources:
                if hook_name == name:
                    current[name, head] = (x if head is None else x[:, :, head]).clone()

        return hook

    def patch(name: str) -> HookFn:
        def hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            for head, src in into[name]:
                delta = current[src] - ablated_of(src, current[src])
                if head is None:
                    x = x - delta
                else:
                    x[:, :, head] = x[:, :, head] - delta
            return x

        return hook

    hooks: list[tuple[str, HookFn]] = [(n, record(n)) for n in sorted({n for n, _ in sources})]
    return hooks + [(name, patch(name)) for name in into]
