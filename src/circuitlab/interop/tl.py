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

import re
from typing import Any

from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit, nearest
from circuitlab.acdc.graph import RESID_END, RESID_START
from circuitlab.errors import ArtifactError
from circuitlab.lrp.circuit import NeuronCircuit

FORMAT = "circuitlab.tl_export/1"
TL_SETTINGS = {"set_use_attn_result": True, "set_use_split_qkv_input": True,
               "set_use_hook_mlp_in": True}  # fmt: skip
_HEAD = re.compile(r"^A(\d+)\.(\d+)$")
_INPUT = re.compile(r"^A(\d+)\.(\d+)\.([QKV])$")
_MLP = re.compile(r"^MLP (\d+)$")


def source_hook(name: str) -> dict[str, Any]:
    """The TL hook (and head) of one of circuitlab's source nodes."""
    if name == RESID_START:
        return {"hook": "blocks.0.hook_resid_pre", "head": None}
    if m := _HEAD.match(name):
        return {"hook": f"blocks.{m.group(1)}.attn.hook_result", "head": int(m.group(2))}
    if m := _MLP.match(name):
        return {"hook": f"blocks.{m.group(1)}.hook_mlp_out", "head": None}
    raise ArtifactError(f"{name!r} is not a source node of circuitlab's edge graph")


def dest_hook(name: str) -> dict[str, Any]:
    """The TL hook (and head) of one of circuitlab's destination nodes."""
    if name == RESID_END:
        return {"hook": "ln_final.hook_in", "head": None}
    if m := _INPUT.match(name):
        layer, head, kind = m.groups()
        return {"hook": f"blocks.{layer}.attn.hook_{kind.lower()}_input", "head": int(head)}
    if m := _MLP.match(name):
        return {"hook": f"blocks.{m.group(1)}.hook_mlp_in", "head": None}
    raise ArtifactError(f"{name!r} is not a destination node of circuitlab's edge graph")


def edge_hooks(edge: str) -> dict[str, Any]:
    src, sep, dst = edge.partition("->")
    if not sep:
        raise ArtifactError(f"{edge!r} is not an edge name (`src->dst`)")
    return {"edge": edge, "src": source_hook(src), "dst": dest_hook(dst)}


def pick_circuit(art: CircuitArtifact, tau: float | None, label: str | None) -> EdgeCircuit:
    """One circuit of an artifact: by label, by the τ nearest ``tau``, else the first."""
    if label is not None:
        for c in art.circuits:
            if c.label == label:
                return c
        labels = [c.label for c in art.circuits]
        raise ArtifactError(
            f"no circuit labelled {label!r} in this {art.method} artifact: {labels}"
        )
    if tau is not None:
        taus = [c.tau for c in art.circuits]
        if any(t is None for t in taus):
            raise ArtifactError(f"{art.method} circuits have no τ; choose one by --label")
        return art.circuits[nearest(taus, tau)]  # type: ignore[arg-type]
    return art.circuits[0]


def export_edges(art: CircuitArtifact, circuit: EdgeCircuit) -> dict[str, Any]:
    """The kept edges of ``circuit`` as TL hooks (the rest of the graph is what is patched)."""
    return {
        "format": FORMAT,
        "kind": "edges",
        "method": art.method,
        "model": art.model,
        "task": art.task,
        "label": circuit.label,
        "tau": circuit.tau,
        "n_edges_total": len(art.edges),
        "ablation": art.params.get("ablation"),
        "tl_settings": TL_SETTINGS,
        "kept": [edge_hooks(e) for e in circuit.kept],
        "patched": [edge_hooks(e) for e in art.edges if e not in set(circuit.kept)],
    }


def export_neurons(circuit: NeuronCircuit) -> dict[str, Any]:
    """A neuron circuit as ``hook_post`` entries: layer hook, neuron, position, attribution."""
    return {
        "format": FORMAT,
        "kind": "neurons",
        "method": circuit.method,
        "model": circuit.model,
        "task": circuit.task,
        "neurons": [
            {"hook": f"blocks.{layer}.mlp.hook_post", "neuron": n, "position": pos, "score": s}
            for (layer, pos, n), s in sorted(circuit.neurons.items())
        ],
    }
