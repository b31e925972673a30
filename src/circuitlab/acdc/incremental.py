"""Incremental single-state ACDC checks, shared by exact ACDC (`circuitlab.acdc.fast`) and
group testing (`circuitlab.acdc.approx`).

ACDC visits destination blocks from the output backwards, so while it checks edges into block
``l`` every edge of its state is at block ``l`` or later: block ``l``'s sources are the clean
ones, and its head outputs change only where the edges under test feed in. A state keeps
block ``l``'s head outputs (`Heads`); a check of an edge into one Q input recomputes that head,
into a K/V input the heads of that KV group, into ``MLP l`` none (`attention.head_outputs`), and
the forward resumes after block ``l``'s attention. The same values as the full forward up to
float rounding (the near-τ count says when that could matter).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from circuitlab.acdc.attention import head_outputs
from circuitlab.acdc.batch import PatchContext, PreparedBatch
from circuitlab.acdc.patch import forward

#: a state's cached head outputs of the block being visited: (block, [1, B, H, S|1, d])
Heads = tuple[int, Tensor] | None


class IncrementalChecks:
    """Checks of edge sets on top of one state at a time (module doc)."""

    def __init__(self, ctx: PatchContext) -> None:
        self.ctx = ctx
        graph = ctx.graph
        h, g = graph.n_heads, graph.n_kv_heads
        self.last = graph.n_layers - 1
        self.clean_delta = ctx.ablated - ctx.clean_src  # [B, n_sources, S, d]
        self.all_heads = list(range(h))
        #: per edge: (block, heads whose output it changes, or None for an MLP / Resid End)
        self.info: list[tuple[int, list[int] | None]] = [(0, None)] * graph.n_edges
        for block in graph.blocks:
            for e in range(block.offset, block.stop):
                row = (e - block.offset) // block.n_sources
                heads = None
                if block.kind == "attn":
                    group = row if row < h else (row - h) % g
                    heads = [row] if row < h else [x for x in range(h) if x // (h // g) == group]
                self.info[e] = (block.layer, heads)

    def check(
        self, mask: Tensor, cache: Heads, trial: Tensor, edges: Sequence[int]
    ) -> tuple[Tensor, Heads, Heads]:
        """Logits ``[1, B, V]`` of the state ``mask`` plus ``edges`` (``trial``; edges of one
        block), given the state's cached head outputs ``cache`` (None: not yet computed).
        Returns the logits, the state's cache (computed on entering a block) and the cache
        of ``trial`` (the state's if the edges are accepted)."""
        ctx = self.ctx
        layer = self.info[edges[0]][0]
        if layer > self.last:  # into Resid End: nothing to recompute before the unembedding
            return forward(ctx, trial[None], start_layer=layer, answer_only=True), cache, cache
        answer = layer == self.last
        if cache is None or cache[0] != layer:  # entering the block
            cache = (
                layer,
                head_outputs(
                    ctx, mask[None], layer, self.all_heads, self.clean_delta, answer=answer
                ),
            )
        heads = cache[1]
        changed = sorted({h for e in edges for h in (self.info[e][1] or ())})
        if changed:
            heads = heads.clone()
            heads[:, :, changed] = head_outputs(
                ctx, trial[None], layer, changed, self.clean_delta, answer=answer
            )
        logits = forward(ctx, trial[None], start_layer=layer, answer_only=True, heads=heads)
        return logits, cache, (layer, heads)


def incremental_checks(ctx: PreparedBatch) -> IncrementalChecks | None:
    """Incremental checks on a backend that resumes forwards (``supports_resume``, the native
    patch layer); None otherwise (the TransformerLens hooks cannot recompute single heads:
    every check there is a full forward)."""
    if not ctx.model.supports_resume:
        return None
    assert isinstance(ctx, PatchContext)  # the resuming backend's context
    return IncrementalChecks(ctx)
