"""One interface for the two patch layers: circuitlab's own (`circuitlab.acdc.patch`, for a
model loaded with a circuitlab adapter) and the TransformerLens hooks
(`circuitlab.acdc.hooked`, for a model loaded with ``backend: transformer_lens``).

Everything above the patch layers — ACDC, EAP, head pruning, the evaluation — holds a
`PatchBackend` and calls `circuitlab.acdc.patch.prepare` / `forward` / `evaluate_masks`,
which check the arguments and call the backend's own ``prepare`` and ``forward``. What one
backend can do and the other cannot is a capability the backend states
(``supports_dest_gradients``, ``supports_resume``), never a test of which class it is.
`patchable` picks the backend from the model's loading spec, the one place that knows both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from circuitlab.acdc.graph import Graph
from circuitlab.acdc.hooked import hooked
from circuitlab.acdc.patch import native
from circuitlab.acdc.weights import KV_EDGES
from circuitlab.errors import ConfigError
from circuitlab.models.adapters import ModelDims
from circuitlab.models.loading import LoadedModel

if TYPE_CHECKING:
    from circuitlab.acdc.batch import EdgeMask, PreparedBatch
    from circuitlab.prompts import PromptBatch
    from circuitlab.types import Ablation


@runtime_checkable
class PatchBackend(Protocol):
    """A loaded model seen as an edge graph by one patch layer.

    ``prepare`` runs the clean batch (and what the ablation needs) once and returns the
    backend's `PreparedBatch`; ``forward`` gives the logits ``[E, B, V]`` (``[E, B, S, V]``
    with ``all_positions``) of that batch with the edges of a checked `EdgeMask` patched.
    Both are called through `circuitlab.acdc.patch`, which checks the arguments first."""

    #: whether each destination's input can be given its own tensor to differentiate (the
    #: gradient probe of EAP-IG's ``inputs`` and ``activations`` paths)
    supports_dest_gradients: ClassVar[bool]
    #: whether ``forward`` saves work with ``start_layer``, ``answer_only`` and known
    #: ``heads`` (incremental ACDC); without it every forward is a full one (same logits)
    supports_resume: ClassVar[bool]

    @property
    def loaded(self) -> LoadedModel: ...

    @property
    def graph(self) -> Graph: ...

    @property
    def dims(self) -> ModelDims: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def prepare(
        self, batch: PromptBatch, ablation: Ablation, *, reference: PromptBatch | None = None
    ) -> PreparedBatch: ...

    def forward(
        self,
        ctx: PreparedBatch,
        mask: EdgeMask | None,
        *,
        start_layer: int = 0,
        all_positions: bool = False,
        answer_only: bool = False,
        heads: Tensor | None = None,
    ) -> Tensor: ...


def _native(loaded: LoadedModel, kv_edges: str) -> PatchBackend:
    return native(loaded, kv_edges=kv_edges)


def _hooked(loaded: LoadedModel, kv_edges: str) -> PatchBackend:
    if kv_edges != "kv_head" and loaded.dims.n_kv_heads != loaded.dims.n_heads:
        raise ConfigError(
            "kv_edges 'query_head' is implemented by the native patch layer only; load "
            "the model with the native backend"
        )
    return hooked(loaded)


#: the patch layer of each loading backend (`circuitlab.models.spec.ModelSpec.backend`)
BACKENDS: dict[str, Callable[[LoadedModel, str], PatchBackend]] = {
    "native": _native,
    "transformer_lens": _hooked,
}


def patchable(loaded: LoadedModel, *, kv_edges: str = "kv_head") -> PatchBackend:
    """The patch layer over a loaded model: circuitlab's own for the native backend (ModelError
    for an architecture whose forward pass it cannot reproduce exactly, naming the feature;
    `circuitlab.acdc.weights.read_weights`), the TransformerLens hooks for a model loaded with
    ``backend: transformer_lens`` (`circuitlab.acdc.hooked.hooked`, which checks that the
    hooks decompose the model as the graph says). ``kv_edges`` (`read_weights`): the graph's
    K/V inputs per KV head or per query head; the latter on the native layer only."""
    if kv_edges not in KV_EDGES:
        raise ConfigError(f"kv_edges {kv_edges!r} is unknown; choose one of {KV_EDGES}")
    return BACKENDS[loaded.spec.backend](loaded, kv_edges)
