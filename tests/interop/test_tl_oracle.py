"""TransformerLens 4 as an independent oracle for every hook circuitlab relies on.

For a tiny random model of each supported family, TransformerLens' `TransformerBridge` is built
from its own copy of the same HF weights, and circuitlab's own machinery must agree with it to
float tolerance:

* the patch layer's sources: ``Resid Start`` = ``blocks.0.hook_resid_pre``, head ``A{l}.{h}`` =
  ``blocks.{l}.attn.hook_result[..., h, :]`` (the head's share of W_O, without its bias), ``MLP
  {l}`` = ``blocks.{l}.hook_mlp_out``; MLP neurons (the down-projection input) =
  ``blocks.{l}.mlp.hook_post``;
* edge patching: for random edge masks, `circuitlab.acdc.forward` equals the same patching done
  with TL hooks on the per-destination inputs ``hook_q_input`` / ``hook_k_input`` /
  ``hook_v_input`` (one per KV head under grouped-query attention), ``hook_mlp_in`` and
  ``ln_final.hook_in`` (a destination reads its clean input minus, for each patched edge, the
  source's current output minus its ablated output), with resample and zero ablation;
* seed 000's head pruning run literally through TL hooks (zero each head's ``hook_result``,
  greedy from the last layer) prunes the heads `head_pruning` prunes;
* neuron steering (multiplier 0 and 2) equals scaling ``hook_post`` for those neurons.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("transformer_lens")

from transformer_lens.model_bridge.sources import build_bridge_from_module
from transformers import AutoModelForCausalLM

from circuitlab.acdc import patchable, prepare_rows
from circuitlab.acdc.heads import HeadPruningConfig, prune_heads
from circuitlab.acdc.patch import forward
from circuitlab.models import LoadedModel
from circuitlab.steering.neurons import NeuronSet, steer_neurons
from circuitlab.types import TaskRow
from tiny_models import build_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAMILIES = ["LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", "GemmaForCausalLM",
            "GPT2LMHeadModel"]  # fmt: skip
ATOL = 2e-5


def rows(n: int = 4, length: int = 5, seed: int = 0) -> list[TaskRow]:
    """Equal-length prompts (no padding: TL and circuitlab then see identical positions); the
    corrupt prompt differs in two words."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = torch.randint(2, 60, (length,), generator=g).tolist()
        corrupt = [*words[:1], *((w + 11) % 58 + 2 for w in words[1:3]), *words[3:]]
        out.append(TaskRow(
            id=f"r{i}", split="train", prompt=" ".join(f"w{w}" for w in words),
            corrupt_prompt=" ".join(f"w{w}" for w in corrupt),
            target=f" w{(words[-1] + 1) % 58 + 2}", counterfactual=f" w{(words[-1] + 5) % 58 + 2}",
        ))  # fmt: skip
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedModel, Any]:
    """circuitlab's model and a TransformerBridge over its own copy of the same weights."""
    path = tmp_path_factory.mktemp(request.param) / "m"
    lm = build_tiny(request.param, path)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    bridge = build_bridge_from_module(hf, request.param, hf_config=hf.config, model_name="tiny")
    bridge.set_use_attn_result(True)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_hook_mlp_in(True)
    return lm, bridge


def tokens(lm: LoadedModel, rs: list[TaskRow], corrupt: bool = False) -> Tensor:
    return torch.tensor([lm.tokenizer(r.corrupt_prompt if corrupt else r.prompt)["input_ids"]
                         for r in rs])  # fmt: skip


def tl_sources(bridge: Any, cache: Any, n_layers: int) -> Tensor:
    """``[B, n_sources, S, d]`` in circuitlab's source order, from a TL cache."""
    parts = [cache["blocks.0.hook_resid_pre"][:, None]]
    for layer in range(n_layers):
        parts.append(cache[f"blocks.{layer}.attn.hook_result"].transpose(1, 2))
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"][:, None])
    return torch.cat(parts, dim=1)


def test_bridge_reproduces_the_hf_logits(pair: tuple[LoadedModel, Any]) -> None:
    lm, bridge = pair
    ids = tokens(lm, rows())
    with torch.no_grad():
        assert torch.allclose(bridge(ids), lm.model(ids).logits, atol=ATOL)


def test_sources_and_neurons_agree(pair: tuple[LoadedModel, Any]) -> None:
    lm, bridge = pair
    rs = rows()
    ctx = prepare_rows(patchable(lm), rs, "zero")
    ids = tokens(lm, rs)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids)
        ours = ctx.clean_src[:, :, : ids.shape[1]]
        theirs = tl_sources(bridge, cache, lm.dims.n_layers)
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()
        with lm.adapter.capture_neurons(lm.model) as acts:
            lm.model(ids)
    for layer in range(lm.dims.n_layers):
        assert torch.allclose(acts[layer], cache[f"blocks.{layer}.mlp.hook_post"], atol=ATOL)


def tl_patched_logits(bridge: Any, lm: LoadedModel, ctx: Any, mask: Tensor, ids: Tensor,
                      ablated: Tensor) -> Tensor:  # fmt: skip
    """Edge patching with TL hooks only: record each source as the patched run computes it;
    each destination input loses Σ mask · (current − ablated) over its sources."""
    graph = ctx.graph
    current: dict[int, Tensor] = {}
    n_heads, n_kv = graph.n_heads, graph.n_kv_heads

    def record(first: int, per_head: bool) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            if per_head:
                for h in range(x.shape[2]):
                    current[first + h] = x[:, :, h].clone()
            else:
                current[first] = x.clone()

        return hook

    def patch(dests: list[int], per_head: bool) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            for k, dst in enumerate(dests):
                delta = torch.zeros_like(x[:, :, k] if per_head else x)
                for src in graph.dest_sources[dst]:
                    edge = graph.edge_index(f"{graph.sources[src]}->{graph.dests[dst]}")
                    if mask[edge]:
                        delta += mask[edge] * (current[src] - ablated[:, src, : x.shape[1]])
                if per_head:
                    x[:, :, k] -= delta
                else:
                    x -= delta
            return x

        return hook

    dest_id = {d: i for i, d in enumerate(graph.dests)}
    hooks = [("blocks.0.hook_resid_pre", record(0, False))]
    for layer in range(lm.dims.n_layers):
        for kind, n in (("q", n_heads), ("k", n_kv), ("v", n_kv)):
            dests = [dest_id[f"A{layer}.{h}.{kind.upper()}"] for h in range(n)]
            hooks.append((f"blocks.{layer}.attn.hook_{kind}_input", patch(dests, True)))
        hooks.append(
            (f"blocks.{layer}.attn.hook_result", record(graph.head_source(layer, 0), True))
        )
        hooks.append((f"blocks.{layer}.hook_mlp_in", patch([dest_id[f"MLP {layer}"]], False)))
        hooks.append((f"blocks.{layer}.hook_mlp_out", record(graph.mlp_source(layer), False)))
    hooks.append(("ln_final.hook_in", patch([dest_id["Resid End"]], False)))
    with torch.no_grad():
        return bridge.run_with_hooks(ids, fwd_hooks=hooks)


@pytest.mark.parametrize("ablation", ["resample", "zero"])
def test_edge_patching_agrees_with_tl_hooks(pair: tuple[LoadedModel, Any], ablation: str) -> None:
    lm, bridge = pair
    rs = rows()
    ctx = prepare_rows(patchable(lm), rs, ablation)
    ids = tokens(lm, rs)
    if ablation == "resample":
        with torch.no_grad():
            _, corrupt = bridge.run_with_cache(tokens(lm, rs, corrupt=True))
        ablated = tl_sources(bridge, corrupt, lm.dims.n_layers)
    else:
        ablated = torch.zeros(1, len(ctx.graph.sources), 1, lm.dims.d_model)
    g = torch.Generator().manual_seed(1)
    for density in (0.1, 0.5, 1.0):
        mask = (torch.rand(ctx.graph.n_edges, generator=g) < density).float()
        with torch.no_grad():
            ours = forward(ctx, mask, all_positions=True)
        theirs = tl_patched_logits(bridge, lm, ctx, mask, ids, ablated)
        assert torch.allclose(ours[:, : ids.shape[1]], theirs, atol=1e-4), (
            f"density {density}: max |Δ| {(ours[:, : ids.shape[1]] - theirs).abs().max():.2e}"
        )
    clean = forward(ctx, torch.ones(ctx.graph.n_edges))  # everything patched changes the output
    assert not torch.allclose(clean, ctx.clean_logits, atol=1e-3)


def test_seed_head_pruning_through_tl_hooks(pair: tuple[LoadedModel, Any]) -> None:
    """Seed 000's algorithm written against TL: zero each head's result, from the last layer
    back; prune it when the target logit moves by less than the threshold (the model keeps the
    heads pruned so far)."""
    lm, bridge = pair
    rs = rows()
    ctx = prepare_rows(patchable(lm), rs, "zero")
    ids = tokens(lm, rs)
    target = torch.tensor([lm.tokenizer(r.prompt + r.target)["input_ids"][-1] for r in rs])
    pruned: set[tuple[int, int]] = set()

    def metric(zeroed: set[tuple[int, int]]) -> float:
        def zero(layer: int) -> Callable[..., Tensor]:
            def hook(x: Tensor, hook: Any) -> Tensor:
                x = x.clone()
                for ly, h in zeroed:
                    if ly == layer:
                        x[:, :, h] = 0
                return x

            return hook

        hooks = [(f"blocks.{ly}.attn.hook_result", zero(ly)) for ly in range(lm.dims.n_layers)]
        with torch.no_grad():
            logits = bridge.run_with_hooks(ids, fwd_hooks=hooks)[:, -1]
        return float(logits[torch.arange(len(rs)), target].mean())

    initial = metric(set())
    heads = [(ly, h) for ly in range(lm.dims.n_layers) for h in range(lm.dims.n_heads)]
    single = sorted(abs(metric({head}) - initial) for head in heads)
    mid = len(single) // 2  # a threshold between two heads' effects: about half are pruned
    threshold = (single[mid - 1] + single[mid]) / 2
    ours = prune_heads(ctx, HeadPruningConfig(threshold=threshold, metric="target_logit"))
    for layer in reversed(range(lm.dims.n_layers)):
        for head in range(lm.dims.n_heads):
            if abs(metric(pruned | {(layer, head)}) - initial) < threshold:
                pruned.add((layer, head))
    assert 0 < len(pruned) < lm.dims.n_layers * lm.dims.n_heads  # a non-trivial threshold
    assert {(int(a[1:].split(".")[0]), int(a.split(".")[1])) for a in ours.pruned} == pruned


@pytest.mark.parametrize("multiplier", [0.0, 2.0])
def test_neuron_steering_equals_scaling_hook_post(
    pair: tuple[LoadedModel, Any], multiplier: float
) -> None:
    lm, bridge = pair
    ids = tokens(lm, rows())
    neurons = [(0, 3), (0, 17), (lm.dims.n_layers - 1, 5)]
    with torch.no_grad(), steer_neurons(lm, NeuronSet.from_pairs(neurons), multiplier):
        ours = lm.model(ids).logits

    def scale(layer: int) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            for ly, n in neurons:
                if ly == layer:
                    x[..., n] *= multiplier
            return x

        return hook

    hooks = [(f"blocks.{ly}.mlp.hook_post", scale(ly)) for ly in range(lm.dims.n_layers)]
    with torch.no_grad():
        theirs = bridge.run_with_hooks(ids, fwd_hooks=hooks)
        plain = bridge(ids)
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert not torch.allclose(theirs, plain, atol=1e-6)  # the steering changed something


def test_an_exported_circuit_round_trips_through_tl_hooks(
    pair: tuple[LoadedModel, Any], tmp_path: Path
) -> None:
    """`circuitlab export` → `patching_hooks` (TL hooks built from the export alone) → the
    circuit's logits, equal to circuitlab's."""
    import json
    import subprocess
    import sys

    from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit, save_circuit
    from circuitlab.interop.tl import patching_hooks

    lm, bridge = pair
    rs = rows()
    ctx = prepare_rows(patchable(lm), rs, "resample")
    graph = ctx.graph
    g = torch.Generator().manual_seed(2)
    kept = tuple(e for e in graph.edges if torch.rand(1, generator=g) < 0.3)
    art = CircuitArtifact(
        method="acdc", model="tiny", task="t", edges=graph.edges, scores=(0.0,) * graph.n_edges,
        score_kind="prune_tau", circuits=(EdgeCircuit("tau=0.01", kept, 0.01),), n_forward=0,
        n_backward=0, seconds=0.0, n_prompts=len(rs), params={"ablation": "resample"},
    )  # fmt: skip
    save_circuit(tmp_path / "acdc.json", art)
    subprocess.run(
        [sys.executable, "-m", "circuitlab.cli", "export", "--circuit", str(tmp_path / "acdc.json"),
         "--tau", "0.01", "--out", str(tmp_path / "tl.json")],
        check=True, capture_output=True, env={**os.environ, "WANDB_MODE": "disabled"},
    )  # fmt: skip
    export = json.loads((tmp_path / "tl.json").read_text())
    assert len(export["kept"]) == len(kept) and export["tl_settings"]["set_use_attn_result"]
    with torch.no_grad():
        _, corrupt = bridge.run_with_cache(tokens(lm, rs, corrupt=True))
        hooks = patching_hooks(export, corrupt)  # what a TL user runs, from the export alone
        theirs = bridge.run_with_hooks(tokens(lm, rs), fwd_hooks=hooks)
        mask = graph.mask([e for e in graph.edges if e not in set(kept)])
        ours = forward(ctx, mask, all_positions=True)
    width = theirs.shape[1]
    assert torch.allclose(ours[:, :width], theirs, atol=1e-4), (
        (ours[:, :width] - theirs).abs().max()
    )


def test_an_exported_neuron_circuit_ablates_like_circuitlab(pair: tuple[LoadedModel, Any]) -> None:
    """A neuron export (hook_post, neuron, end-relative position) applied with TL hooks equals
    circuitlab's ablation of the same circuit at its positions."""
    from circuitlab.interop.tl import export_neurons
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.steering.neurons import using_last

    lm, bridge = pair
    ids = tokens(lm, rows())
    last = lm.dims.n_layers - 1
    circuit = NeuronCircuit({(0, -1, 3): 0.5, (last, -2, 7): -0.1, (last, -1, 7): 0.2}, "tiny",
                            "t", "lrp", n_layers=lm.dims.n_layers, d_mlp=lm.dims.d_mlp)  # fmt: skip
    export = export_neurons(circuit)
    # the stored sign travels with each neuron: +1 supports the metric, −1 opposes it
    assert [(e["score"], e["sign"]) for e in export["neurons"]] == [(0.5, 1), (-0.1, -1), (0.2, 1)]
    assert {e["hook"] for e in export["neurons"]} == {
        "blocks.0.mlp.hook_post",
        f"blocks.{last}.mlp.hook_post",
    }

    def ablate(name: str) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            for e in export["neurons"]:
                if e["hook"] == name:
                    x[:, x.shape[1] + e["position"], e["neuron"]] = 0.0
            return x

        return hook

    names = sorted({e["hook"] for e in export["neurons"]})
    with torch.no_grad():
        theirs = bridge.run_with_hooks(ids, fwd_hooks=[(n, ablate(n)) for n in names])
        end = torch.full((ids.shape[0],), ids.shape[1] - 1)
        ns = NeuronSet.from_circuit(circuit)
        with using_last(end), steer_neurons(lm, ns, 0.0, positions="circuit"):
            ours = lm.model(ids).logits
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert not torch.allclose(theirs, bridge(ids), atol=1e-6)
