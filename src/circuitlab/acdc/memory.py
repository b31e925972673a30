"""What EAP's backward keeps: the bytes of the tensors autograd saves in the forward.

Two ways to get every edge's mask gradient (`circuitlab.acdc.eap`):

* ``mask`` — the edge mask requires grad. Every block's destination inputs are
  ``resid + Σ m · (ablated − current)`` and the backward keeps the differences
  ``[E·B, n_sources, S, d]`` of each block, in float32 (the mask's dtype, so that edge
  gradients do not tie at a bf16 model's resolution): memory grows with the number of sources
  times the number of blocks, i.e. with the edges. The parameters require grad, so the inputs of
  every linear map are kept too.
* ``probe`` — the gradient at each destination input (`circuitlab.acdc.gradients`) with the
  parameters frozen: the backward keeps the forward's activations for ``E·B`` rows, with every
  destination its own input (``H + 2G`` per attention block), and nothing per edge.

`saved_bytes` counts, term by term, the tensors saved by the ops circuitlab's patch layer
runs (measured with ``torch.autograd.graph.saved_tensors_hooks`` in
tests/acdc/test_eap_memory.py: the probe path within 10 % on tiny Llama-, Qwen2- and
GPT-2-shaped models, 3 % at width 64; the mask path an upper bound within 25 %). It
leaves out what exists anyway (the weights, the prepared batch's clean and ablated sources,
``[B, n_sources, S, d]`` each) and the transients of a pass. ``E`` is the number of IG
points folded into the pass (1 for EAP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch

from circuitlab.models.adapters import ModelDims

if TYPE_CHECKING:
    from circuitlab.acdc.batch import PatchContext

Path = Literal["mask", "probe"]

#: Saved tensors of ``d_mlp`` width per MLP: gate, up and their product (gated, SiLU), or the
#: first projection's output and three inside GPT-2's tanh-approximated GELU (``gelu_new``).
MLP_SAVES = {"gated": 3, "gelu_new": 4}

#: The budget for the probe's saved tensors that sets EAP's default micro-batch.
EAP_BUDGET_BYTES = 8 * 2**30


def saved_bytes(
    dims: ModelDims,
    *,
    batch: int,
    seq: int,
    dtype: torch.dtype,
    path: Path,
    ig_steps: int = 1,
    rms_norm: bool = True,
    mlp: str = "gated",
) -> int:
    """Bytes autograd keeps for the backward of one EAP pass over ``batch`` prompts of
    ``seq`` tokens with ``ig_steps`` points folded in (module doc). ``rms_norm``: HF's RMSNorm
    keeps its input in float32 (LayerNorm in the model dtype); ``mlp``: a key of
    `MLP_SAVES`."""
    p = torch.finfo(dtype).bits // 8
    q = 4 if rms_norm else p  # a norm's saved input
    n, s, d = ig_steps * batch, seq, dims.d_model
    h, g, hd, dm = dims.n_heads, dims.n_kv_heads, dims.head_dim, dims.d_mlp
    dests = h + 2 * g
    probs = n * h * s * s * (4 + (p if p < 4 else 0))  # softmax in float32, cast back
    layer = (
        n * dests * s * d * q  # every attention destination's input, at its norm
        + 3 * n * h * s * hd * p  # queries, keys, values at the score and value products
        + probs
        + dests * d * hd * p  # per-head weight copies the products make
        + n * s * d * q  # the MLP's input at its norm
        + MLP_SAVES[mlp] * n * s * dm * p
    )
    total = dims.n_layers * layer + (dims.n_layers + 2) * n * s * d * q + n * d * q
    total += 2 * n * dims.vocab_size * 4  # float32 logits and their log-softmax
    if path == "probe":
        return total
    heads = h + 1  # sources per layer: its heads and its MLP
    deltas = (
        sum(
            n * (1 + layer * heads) * s * d  # attention block
            + n * (1 + layer * heads + h) * s * d  # MLP block
            for layer in range(dims.n_layers)
        )
        + n * (1 + dims.n_layers * heads) * d
    )  # Resid End, at the answer position
    weight_inputs = (
        dims.n_layers
        * (
            2 * n * dests * s * d  # normalised destination inputs, and their per-head copies
            + 4 * n * s * d  # the MLP's normalised input (two views) and its mixed input
            + n * s * dm  # the down projection's input
            + n * h * s * hd  # the output projection's input
        )
        + 2 * n * d
    )
    # the mix with a mask that requires grad runs in float32 (`batch.mix_operands`)
    return total + deltas * max(p, 4) + weight_inputs * p


def eap_micro_batch(ctx: PatchContext, ig_steps: int, budget: int = EAP_BUDGET_BYTES) -> int:
    """The most prompts of ``ctx`` whose probe pass (`saved_bytes`, Llama-style terms) fits
    ``budget`` bytes — at least 1."""
    pm = ctx.model
    seq = ctx.batch.input_ids.shape[1]

    def size(batch: int) -> int:
        return saved_bytes(
            pm.dims, batch=batch, seq=seq, dtype=pm.dtype, path="probe", ig_steps=ig_steps
        )

    per_prompt = size(2) - size(1)
    fixed = size(1) - per_prompt  # the weight copies, whatever the batch
    return max(1, min(len(ctx.batch), (budget - fixed) // per_prompt))


def measured_saved_bytes(fn: Callable[[], object], exclude: set[int] = frozenset()) -> int:
    """What `saved_bytes` predicts, measured: the bytes of the distinct storages autograd saves
    for the backward while ``fn`` runs (``torch.autograd.graph.saved_tensors_hooks``), less the
    storages whose ``data_ptr`` is in ``exclude`` (pass the parameters')."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
