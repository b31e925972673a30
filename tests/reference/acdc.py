"""A slow, obviously-correct edge-patching forward: one prompt at a time (no padding), every
destination input summed edge by edge in Python, every head computed on its own.

It shares no code with `circuitlab.acdc.patch`: it reads weights through the adapter, calls
HF's own norm/MLP/embedding modules and HF's `apply_rotary_pos_emb`, and enumerates a
destination's sources from the rule "a source feeds every destination after it".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from circuitlab.acdc import Graph
from circuitlab.models import LoadedModel
from circuitlab.types import TaskRow


def _sources_before_block(layer: int, n_heads: int) -> list[str]:
    out = ["Resid Start"]
    for j in range(layer):
        out += [f"A{j}.{h}" for h in range(n_heads)] + [f"MLP {j}"]
    return out


def run_prompt(
    lm: LoadedModel,
    graph: Graph,
    ids: list[int],
    mask: Tensor | None,
    ablated: dict[str, Tensor] | None,
    seen: set[str] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits ``[S, V]`` of one prompt with edge ``e`` mixed by ``mask[e]`` between the
    current and the ablated source output; also every source's output ``[S, d]``."""
    model, ad, dims = lm.model, lm.adapter, lm.dims
    n_heads, n_kv, hd = dims.n_heads, dims.n_kv_heads, dims.head_dim
    s = len(ids)
    x_ids = torch.tensor(ids, device=lm.device)[None]
    outs: dict[str, Tensor] = {}
    start = ad.root(model, "embed")(x_ids)[0]
    if ad.pos_embed is not None:
        start = start + ad.root(model, "pos_embed")(torch.arange(s, device=lm.device))
    outs["Resid Start"] = start
    bias = torch.zeros_like(start)

    def dest_input(dest: str, sources: list[str]) -> Tensor:
        total = bias
        for src in sources:
            edge = f"{src}->{dest}"
            if seen is not None:
                seen.add(edge)
            m = mask[graph.edge_index(edge)] if mask is not None else 0.0
            other = ablated[src] if ablated is not None else outs[src]
            total = total + (1 - m) * outs[src] + m * other
        return total

    cos = sin = None
    if ad.pos_embed is None:
        cos, sin = model.base_model.rotary_emb(start[None], torch.arange(s)[None])
    causal = torch.tril(torch.ones(s, s, dtype=torch.bool))
    for layer in range(dims.n_layers):
        srcs = _sources_before_block(layer, n_heads)
        ln = ad.module(model, layer, "ln_attn")
        w = {p: ad.proj_weight(model, layer, p) for p in "qkvo"}
        b = {p: ad.proj_bias(model, layer, p) for p in "qkvo"}

        def project(x: Tensor, p: str, i: int, w=w, b=b) -> Tensor:
            rows = slice(i * hd, (i + 1) * hd)
            y = x @ w[p][rows].T
            return y if b[p] is None else y + b[p][rows]

        keys = [project(ln(dest_input(f"A{layer}.{g}.K", srcs)), "k", g) for g in range(n_kv)]
        values = [project(ln(dest_input(f"A{layer}.{g}.V", srcs)), "v", g) for g in range(n_kv)]
        scaling = ad.module(model, layer, "attn").scaling
        for h in range(n_heads):
            q = project(ln(dest_input(f"A{layer}.{h}.Q", srcs)), "q", h)
            g = h // (n_heads // n_kv)
            k, v = keys[g], values[g]
            if cos is not None:
                q4, k4 = apply_rotary_pos_emb(q[None, None], k[None, None], cos, sin)
                q, k = q4[0, 0], k4[0, 0]
            scores = (q @ k.T * scaling).masked_fill(~causal, float("-inf"))
            z = torch.softmax(scores, dim=-1) @ v
            outs[f"A{layer}.{h}"] = z @ w["o"][:, h * hd : (h + 1) * hd].T
        if b["o"] is not None:
            bias = bias + b["o"]
        mlp_in = dest_input(f"MLP {layer}", srcs + [f"A{layer}.{h}" for h in range(n_heads)])
        ln_mlp = ad.module(model, layer, "ln_mlp")
        outs[f"MLP {layer}"] = ad.module(model, layer, "mlp")(ln_mlp(mlp_in))
    final = dest_input("Resid End", _sources_before_block(dims.n_layers, n_heads))
    logits = ad.root(model, "unembed")(ad.root(model, "final_norm")(final))
    return logits, outs


def reference_logits(
    lm: LoadedModel,
    graph: Graph,
    tokenizer: object,
    rows: Sequence[TaskRow],
    mask: Tensor | None,
    ablation: str,
    seen: set[str] | None = None,
) -> Tensor:
    """``[B, V]`` answer-position logits of each row with the masked edges patched."""
    clean = [tokenizer(r.prompt)["input_ids"] for r in rows]
    corrupt = [tokenizer(r.corrupt_prompt)["input_ids"] for r in rows]
    with torch.no_grad():
        clean_outs = [run_prompt(lm, graph, ids, None, None)[1] for ids in clean]
    out = []
    for i, ids in enumerate(clean):
        if ablation == "resample":
            with torch.no_grad():
                ablated = run_prompt(lm, graph, corrupt[i], None, None)[1]
        elif ablation == "zero":
            ablated = {k: torch.zeros_like(v) for k, v in clean_outs[i].items()}
        else:  # mean over the prompts that reach each position
            ablated = {}
            for name in clean_outs[i]:
                per_pos = []
                for p in range(len(ids)):
                    vals = [o[name][p] for o in clean_outs if o[name].shape[0] > p]
                    per_pos.append(torch.stack(vals).mean(0))
                ablated[name] = torch.stack(per_pos)
        logits, _ = run_prompt(lm, graph, ids, mask, ablated, seen)
        out.append(logits[-1])
    return torch.stack(out)


# --------------------------------------------------------------------- algorithms
def _dest_layer(name: str, n_layers: int) -> int:
    """Auto-circuit's layer of a destination, from its name."""
    dest = name.split("->")[1]
    if dest == "Resid End":
        return 2 * n_layers + 1
    if dest.startswith("MLP "):
        return 2 * int(dest[4:]) + 2
    return 2 * int(dest[1:].split(".")[0]) + 1


def reference_acdc(
    ctx: object, taus: Sequence[float], faithfulness: str
) -> tuple[list[float], list[set[str]]]:
    """Auto-circuit's loop, written plainly: full forwards (no resume), one edge at a time.
    Returns the prune score per edge (storage order) and the kept edge names per τ."""
    from circuitlab.acdc import forward

    graph = ctx.graph  # type: ignore[attr-defined]
    edges = list(graph.edges)
    order = sorted(edges, key=lambda e: _dest_layer(e, graph.n_layers), reverse=True)
    clean = ctx.clean_logits  # type: ignore[attr-defined]
    scores = {e: float("inf") for e in edges}
    kept_per_tau = []
    for tau in taus:
        mask = torch.zeros(graph.n_edges)
        prev = 0.0
        for edge in order:
            i = graph.edge_index(edge)
            mask[i] = 1.0
            with torch.no_grad():
                out = forward(ctx, mask)  # type: ignore[arg-type]
            if faithfulness == "kl":
                faith = (
                    torch.nn.functional.kl_div(
                        torch.log_softmax(out, -1),
                        torch.log_softmax(clean, -1),
                        reduction="sum",
                        log_target=True,
                    ).item()
                    / out.shape[0]
                )
            else:
                faith = torch.nn.functional.mse_loss(out, clean).item()
            if faith - prev < tau:
                scores[edge] = min(scores[edge], tau)
                prev = faith
            else:
                mask[i] = 0.0
        kept_per_tau.append({e for e in edges if mask[graph.edge_index(e)] == 0})
    return [scores[e] for e in edges], kept_per_tau
