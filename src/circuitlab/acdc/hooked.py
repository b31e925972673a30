"""Edge patching on TransformerLens hooks: the patch layer of the `transformer_lens` backend.

For a model circuitlab has no adapter for, ACDC, EAP and head pruning run on the hook graph
of its `TransformerBridge` (`circuitlab.models.bridge`) with the semantics of the native patch
layer (`circuitlab.acdc.patch`): every destination reads its clean input minus, for each edge
with mask value ``m``, ``m · (current source output − ablated source output)``.

=============================  ======================================================
graph node                     hook (``[batch, pos, (head,) d_model]``)
=============================  ======================================================
source ``Resid Start``         ``blocks.0.hook_resid_pre``
source ``A{l}.{h}``            ``blocks.{l}.attn.hook_result`` (head ``h``)
source ``MLP {l}``             ``blocks.{l}.hook_mlp_out``
dest ``A{l}.{h}.Q``/``K``/``V``  ``blocks.{l}.attn.hook_{q,k,v}_input`` (head / KV head)
dest ``MLP {l}``               ``blocks.{l}.hook_mlp_in`` (pre-norm; in parallel blocks
                               the residual the MLP reads, not the attention's output)
dest ``Resid End``             ``ln_final.hook_in``
=============================  ======================================================

That rule is exact only when each destination's input is the sum of its sources' outputs (plus
constant biases) and each hook fires once per forward in the graph's order; `hooked` checks
both on a probe batch, and that patching every edge gives the corrupt run, before it returns,
and refuses a model that fails (Phi's MLP reads the attention's norm; OLMo 2 normalises the
block outputs; GPT-J has no per-head hooks in TL 4.3.0).

Masks, ablations, batches and the returned logits are those of `circuitlab.acdc.patch.forward`
(``[n_edges]`` or ``[E, n_edges]``; E edge sets fold into the batch; a mask that requires grad
gives edge gradients). The native layer's speed-ups — resuming at a block from the clean
cache, answer-position-only last blocks, incremental head recomputation — are not available
on hooks: every check is one full forward of the bridge (BENCHMARKS.md says what that costs);
their results do not change, since those speed-ups are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from circuitlab.acdc.batch import (
    EdgeMask,
    PreparedBatch,
    ablated_sources,
    check_batch,
    check_mask,
    mix_operands,
    require_one_device,
)
from circuitlab.acdc.graph import Block, Graph, build_graph
from circuitlab.errors import ConfigError, ModelError
from circuitlab.models.adapters import ModelDims
from circuitlab.models.bridge import parallel_blocks, require_hooks
from circuitlab.models.loading import LoadedModel
from circuitlab.prompts import PromptBatch, batch_from_ids
from circuitlab.types import Ablation

RESID_START_HOOK = "blocks.0.hook_resid_pre"
END_HOOK = "ln_final.hook_in"


@dataclass(frozen=True, eq=False)
class HookedModel:
    """A loaded model with the transformer_lens backend, seen as an edge graph (a
    `circuitlab.acdc.backend.PatchBackend`)."""

    #: no per-destination inputs to differentiate: EAP-IG's inputs/activations paths need the
    #: native layer
    supports_dest_gradients: ClassVar[bool] = False
    #: every forward is one full forward of the bridge (module doc)
    supports_resume: ClassVar[bool] = False

    loaded: LoadedModel
    graph: Graph

    @property
    def bridge(self) -> Any:
        return self.loaded.bridge

    @property
    def dims(self) -> ModelDims:
        return self.loaded.dims

    @property
    def device(self) -> torch.device:
        return next(self.loaded.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.loaded.model.parameters()).dtype

    def prepare(
        self, batch: PromptBatch, ablation: Ablation, *, reference: PromptBatch | None = None
    ) -> HookedContext:
        """`circuitlab.acdc.patch.prepare` on hooks (that function checks the arguments)."""
        start = time.perf_counter()
        batch = batch.to(self.device)
        with torch.no_grad():
            clean_src, logits = _record(self, batch.input_ids, batch.attention_mask, batch.last)
            ablated, n_more = ablated_sources(
                lambda *run: _record(self, *run)[0], batch, ablation, clean_src, reference
            )
        return HookedContext(
            model=self,
            batch=batch,
            ablation=ablation,
            ablated=ablated,
            clean_logits=_at_answer(logits[None], batch.last)[0],
            n_forward=1 + n_more,
            seconds=time.perf_counter() - start,
        )

    def forward(
        self,
        ctx: PreparedBatch,
        mask: EdgeMask | None,
        *,
        start_layer: int = 0,
        all_positions: bool = False,
        answer_only: bool = False,
        heads: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[E, B, V]`` (``[E, B, S, V]`` with ``all_positions``) of the clean batch
        with the masked edges patched: one full forward of the bridge whatever
        ``start_layer`` and ``answer_only`` say (they only save work on the native layer;
        the logits are the same). Known ``heads`` cannot be used on hooks: ConfigError."""
        if heads is not None:
            raise ConfigError(
                "known head outputs (incremental ACDC) need the native patch layer; the "
                "TransformerLens backend recomputes every forward in full"
            )
        assert isinstance(ctx, HookedContext)  # prepared by this backend
        return _forward(ctx, mask, all_positions=all_positions)


def hooked(loaded: LoadedModel) -> HookedModel:
    """The hook patch layer over a model loaded with the transformer_lens backend.

    Turns on the bridge's per-head results, split Q/K/V inputs and MLP-input hook, then checks
    on a short probe that the hooks decompose the model as the graph says (`_self_check`):
    ModelError, naming what is wrong, for a bridge without the graph's hooks, hooks that do not
    fire once each in the graph's order (e.g. an MLP sharing the attention's norm, as in Phi and
    GPT-J, whose MLP input has no hook of its own), or patching every edge not reproducing the
    corrupt run (e.g. norms on the block outputs, which make sources non-additive)."""
    bridge, arch = loaded.bridge, loaded.architecture
    require_one_device(loaded, "edge patching on TransformerLens hooks (ACDC, EAP, head pruning)")
    try:
        bridge.set_use_attn_result(True)
        bridge.set_use_split_qkv_input(True)
        bridge.set_use_hook_mlp_in(True)
    except Exception as exc:  # TL raises NotImplementedError and others: name the model
        raise ModelError(
            f"the {arch} bridge cannot split its attention per head and input "
            f"({type(exc).__name__}: {exc}); edge patching (ACDC, EAP, head pruning) needs it"
        ) from exc
    n = loaded.dims.n_layers
    names = [RESID_START_HOOK, END_HOOK]
    for layer in range(n):
        names += [f"blocks.{layer}.attn.hook_{k}" for k in ("result", "q_input", "k_input",
                                                            "v_input")]  # fmt: skip
        names += [f"blocks.{layer}.hook_mlp_in", f"blocks.{layer}.hook_mlp_out"]
    require_hooks(bridge, names, "edge patching (ACDC, EAP, head pruning)")
    hm = HookedModel(
        loaded=loaded, graph=build_graph(loaded.dims, parallel=parallel_blocks(bridge))
    )
    _self_check(hm, names)
    return hm


def _self_check(hm: HookedModel, names: list[str]) -> None:
    """The hooks fire once each, sources in the graph's order and every destination after its
    sources; and with every edge patched (resample) a probe batch gives the corrupt logits."""
    bridge, arch, graph = hm.bridge, hm.loaded.architecture, hm.graph
    vocab = hm.dims.vocab_size
    ids = (torch.arange(12).reshape(2, 6) * 7 + 3) % vocab
    corrupt = (ids * 5 + 1) % vocab
    order: list[str] = []

    def note(name: str) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            order.append(name)

        return hook

    with torch.no_grad():
        bridge.run_with_hooks(ids.to(hm.device), fwd_hooks=[(n, note(n)) for n in names])
    fired = {n: order.count(n) for n in names}
    wrong = [f"{n} ({k}×)" for n, k in fired.items() if k != 1]
    if wrong:
        raise ModelError(
            f"TransformerLens' hooks on {arch} do not decompose it as circuitlab's edge graph "
            f"needs: {', '.join(wrong[:4])} fire(s) other than once per forward (an MLP that "
            "shares the attention's norm has no input hook of its own); edge patching (ACDC, "
            "EAP, head pruning) is not available for it, the other hook-only stages are"
        )
    src = [RESID_START_HOOK]
    for layer in range(graph.n_layers):
        src += [f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_mlp_out"]
    at = {n: order.index(n) for n in names}
    if [n for n in order if n in set(src)] != src:
        raise ModelError(
            f"TransformerLens' hooks on {arch} fire in an order circuitlab's edge graph does not "
            "have (attention then MLP, layer by layer); edge patching is not available for it"
        )
    _check_additive(hm, ids.to(hm.device))
    batch = batch_from_ids(ids, corrupt, answer=[0, 0], wrong_answer=[1, 1])
    ctx = hm.prepare(batch, "resample")
    every = check_mask(torch.ones(1, graph.n_edges), graph, hm.device, hm.dtype)
    with torch.no_grad():
        want = bridge(corrupt.to(hm.device)).float()
        got = hm.forward(ctx, every, all_positions=True)[0].float()
    gap = float((got - want).abs().max())
    tol = (1e-3 if hm.dtype == torch.float32 else 3e-2) * max(float(want.std()), 1e-6)
    if not gap <= tol or at[END_HOOK] != len(order) - 1:
        raise ModelError(
            f"TransformerLens' hooks on {arch} do not decompose it additively: with every edge "
            f"patched the logits miss the corrupt run's by {gap:.2g} (norms on the attention or "
            "MLP outputs make head and MLP outputs non-additive); edge patching (ACDC, EAP, head "
            "pruning) is not available for it, the other hook-only stages are"
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class HookedContext(PreparedBatch):
    """A batch prepared for hook patching: what every backend's context holds (`PreparedBatch`),
    nothing more (the hooks record the current sources on every forward)."""

    model: HookedModel


def _record(
    hm: HookedModel, ids: Tensor, attention_mask: Tensor, last: Tensor
) -> tuple[Tensor, Tensor]:
    """An unpatched run: every source's output ``[B, n_sources, S, d]`` and the logits."""
    check_batch(attention_mask, last)
    sources = _Sources(1, ids.shape[0])
    logits = hm.bridge.run_with_hooks(
        ids, attention_mask=attention_mask, fwd_hooks=sources.hooks(hm.graph.n_layers)
    )
    return sources.stacked()[0], logits


def _check_additive(hm: HookedModel, ids: Tensor) -> None:
    """Every destination's input is the sum of its sources' outputs plus a constant (the
    attention output biases): otherwise removing a source's output from it is not what
    ablating the edge does. ModelError naming the first destination where it fails."""
    graph, bridge = hm.graph, hm.bridge
    sources = _Sources(1, ids.shape[0])
    inputs: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            inputs[name] = x.float()

        return hook

    dests = [END_HOOK]
    for layer in range(graph.n_layers):
        dests += [f"blocks.{layer}.attn.hook_{k}_input" for k in "qkv"]
        dests.append(f"blocks.{layer}.hook_mlp_in")
    with torch.no_grad():
        bridge.run_with_hooks(
            ids, fwd_hooks=sources.hooks(graph.n_layers) + [(n, keep(n)) for n in dests]
        )
    for block in graph.blocks:
        total = sources.stacked(block.n_sources)[0].float().sum(1)  # [B, S, d]
        if block.kind == "attn":
            names = [f"blocks.{block.layer}.attn.hook_{k}_input" for k in "qkv"]
            per_dest = [inputs[n][:, :, i] for n in names for i in range(inputs[n].shape[2])]
        else:
            name = END_HOOK if block.kind == "end" else f"blocks.{block.layer}.hook_mlp_in"
            per_dest = [inputs[name]]
        for x in per_dest:
            rest = x - total
            spread = float((rest - rest[:1, :1]).abs().max())
            tol = (1e-4 if hm.dtype == torch.float32 else 2e-2) * max(float(x.abs().max()), 1.0)
            if not spread <= tol:
                raise ModelError(
                    f"TransformerLens' hooks on {hm.loaded.architecture} do not decompose it "
                    f"additively: the input of {block.kind} block {block.layer} is not the sum "
                    f"of its sources' outputs (off by up to {spread:.2g}; norms on the attention "
                    "or MLP outputs do that); edge patching (ACDC, EAP, head pruning) is not "
                    "available for it, the other hook-only stages are"
                )


class _Sources:
    """Hooks that keep every source's output of the current run, ``[E, B, k, S, d]`` parts in
    source order (E edge sets folded into the batch as ``E * B``)."""

    def __init__(self, n_sets: int, n_prompts: int) -> None:
        self.e, self.b = n_sets, n_prompts
        self.parts: list[Tensor] = []

    def hooks(self, n_layers: int) -> list[tuple[str, Callable[..., None]]]:
        out = [(RESID_START_HOOK, self._keep(per_head=False))]
        for layer in range(n_layers):
            out.append((f"blocks.{layer}.attn.hook_result", self._keep(per_head=True)))
            out.append((f"blocks.{layer}.hook_mlp_out", self._keep(per_head=False)))
        return out

    def _keep(self, *, per_head: bool) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            x = x.reshape(self.e, self.b, *x.shape[1:])
            self.parts.append(x.transpose(2, 3) if per_head else x[:, :, None])

        return hook

    def stacked(self, n: int | None = None) -> Tensor:
        """The first ``n`` sources (all by default), ``[E, B, n, S, d]``."""
        src = torch.cat(self.parts, dim=2)
        return src if n is None else src[:, :, :n]

    def select(self, cols: list[int]) -> Tensor:
        """Sources ``cols`` (sorted indices), ``[E, B, len(cols), S, d]``, gathered part by
        part: only the sources a block's patched edges leave are copied."""
        picked, start = [], 0
        for part in self.parts:
            k = part.shape[2]
            local = [c - start for c in cols if start <= c < start + k]
            if local:
                picked.append(part if len(local) == k else part[:, :, local])
            start += k
        return picked[0] if len(picked) == 1 else torch.cat(picked, dim=2)


def _forward(ctx: HookedContext, flat: EdgeMask | None, *, all_positions: bool) -> Tensor:
    hm, batch = ctx.model, ctx.batch
    graph = hm.graph
    n_sets = 1 if flat is None else flat.n_sets
    ids = batch.input_ids.repeat(n_sets, 1)
    attention_mask = batch.attention_mask.repeat(n_sets, 1)
    hooks: list[tuple[str, Callable[..., Any]]] = []
    if flat is not None:
        sources = _Sources(n_sets, len(batch))
        hooks += sources.hooks(graph.n_layers)
        for block in graph.blocks:
            m = flat.block(block)
            if m is not None:
                hooks += _patch_hooks(block, m, flat, sources, ctx.ablated, graph)
    with torch.set_grad_enabled(flat is not None and flat.requires_grad):
        logits = hm.bridge.run_with_hooks(ids, attention_mask=attention_mask, fwd_hooks=hooks)
    logits = logits.reshape(n_sets, len(batch), *logits.shape[1:])
    return logits if all_positions else _at_answer(logits, batch.last)


def _patch_hooks(
    block: Block, m: Tensor, flat: EdgeMask, sources: _Sources, ablated: Tensor, graph: Graph
) -> list[tuple[str, Callable[..., Tensor]]]:
    """The destination hooks of one block group: its inputs lose Σ m · (current − ablated)
    (``m``: the block's ``[E, n_dests, n_sources]`` mask)."""
    # only the sources some patched edge leaves (all of them when gradients are wanted),
    # found on the host copy of the mask
    block_host = flat.host[:, block.offset : block.stop].reshape(m.shape)
    cols = (
        list(range(block.n_sources))
        if m.requires_grad
        else block_host.any(0).any(0).nonzero().flatten().tolist()
    )
    m = m[:, :, cols]
    known: dict[str, Tensor] = {}

    def delta() -> Tensor:  # [E, B, n_dests, S, d], computed once per forward
        if "d" not in known:
            current = sources.select(cols)
            mm, cur = mix_operands(m, current)
            prefix = cols == list(range(len(cols)))  # every source so far: a view, no gather
            _, abl = mix_operands(m, ablated[:, : len(cols)] if prefix else ablated[:, cols])
            d = torch.einsum("ern,ebnsd->ebrsd", mm, cur) - torch.einsum("ern,bnsd->ebrsd", mm, abl)
            known["d"] = d.to(current.dtype)
        return known["d"]

    def subtract(rows: slice | None) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            d = delta()
            if rows is None:  # one destination: [E*B, S, d]
                return x - d[:, :, 0].reshape(x.shape)
            per_head = d[:, :, rows].transpose(2, 3)  # [E, B, S, k, d]
            return x - per_head.reshape(x.shape)

        return hook

    layer = block.layer
    if block.kind == "end":
        return [(END_HOOK, subtract(None))]
    if block.kind == "mlp":
        return [(f"blocks.{layer}.hook_mlp_in", subtract(None))]
    h, g = graph.n_heads, graph.n_kv_heads
    return [
        (f"blocks.{layer}.attn.hook_q_input", subtract(slice(0, h))),
        (f"blocks.{layer}.attn.hook_k_input", subtract(slice(h, h + g))),
        (f"blocks.{layer}.attn.hook_v_input", subtract(slice(h + g, h + 2 * g))),
    ]


def _at_answer(logits: Tensor, last: Tensor) -> Tensor:
    """``[E, B, S, V]`` → ``[E, B, V]`` at each prompt's answer position."""
    rows = torch.arange(logits.shape[1], device=logits.device)
    return logits[:, rows, last.to(logits.device)]
