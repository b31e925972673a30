"""Contrastive activation addition (CAA): control vectors and adding them to the residual stream.

A control vector is a mean difference, positive minus negative prompts, at each prompt's last
token: of the residual stream after each layer (`site="resid"`, TL `hook_resid_post`), of each
MLP's output (`"mlp_out"`, the MLP module's output, before a post-feedforward norm where the
family has one), or of the neurons themselves (`neuron_differences`, the down-projection
input); `activation_weighted_vectors` maps the neuron differences through W_down (the seed's
activation-weighted CV). All hooks go through the architecture adapter, or, for a model loaded
with the transformer_lens backend, TransformerLens' ``hook_resid_post`` and ``hook_mlp_out``
(the neuron vectors need an adapter).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from circuitlab.devices import at_last, stack_on, to_device_of
from circuitlab.errors import ArtifactError
from circuitlab.io import atomic_path, require
from circuitlab.models.bridge import edit_hooks
from circuitlab.models.bridge import mlp_out as mlp_out_hook
from circuitlab.models.bridge import resid_post as resid_post_hook
from circuitlab.prompts import encode_prompts
from circuitlab.steering.neurons import (
    SteeringError,
    _resolve_last,
    check_multiplier,
    using_last,
)

if TYPE_CHECKING:
    from circuitlab.models.loading import LoadedModel

Site = Literal["resid", "mlp_out", "neurons"]
#: keys of the CAA artifact `data/caa/{model}/{behaviour}.safetensors`
VECTOR_KEYS: tuple[str, ...] = ("resid", "mlp_out", "neuron_diff", "activation_weighted")


def check_layer(lm: LoadedModel, layer: object) -> int:
    """`layer` as an int inside the model, or SteeringError."""
    n = lm.dims.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise SteeringError(f"layer {layer!r} is outside the model (layers 0..{n - 1})")
    return layer


@torch.no_grad()
def last_token_activations(
    lm: LoadedModel, prompts: Sequence[str], site: Site, batch_size: int = 32
) -> Tensor:
    """`[n_prompts, n_layers, width]` float32 (CPU) activations at each prompt's last token."""
    if site not in ("resid", "mlp_out", "neurons"):
        raise SteeringError(f"site must be 'resid', 'mlp_out' or 'neurons', got {site!r}")
    if not prompts:
        raise SteeringError("no prompts given")
    if batch_size < 1:
        raise SteeringError(f"batch_size must be >= 1, got {batch_size}")
    model, dev = lm.model, lm.device
    layers = list(range(lm.dims.n_layers))
    if site == "neurons":
        lm.needs_adapter("CAA's neuron differences")
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, last = encode_prompts(lm.tokenizer, prompts[start : start + batch_size])
        got: dict[int, Tensor] = {}

        def keep(layer: int, x: Tensor, got: dict[int, Tensor] = got) -> Tensor:
            got[layer] = x.detach()
            return x

        ctx: Any
        ad = lm.adapter
        if site == "resid":
            ctx = residual_edit(lm, keep, layers)
        elif lm.backend == "transformer_lens":  # TL's hook_mlp_out
            ctx = edit_hooks(lm.bridge, mlp_out_hook, keep, layers)
        elif site == "mlp_out":
            ctx = ad.replace_outputs(
                (ad.module(model, ly, "mlp"), _keeper(ly, got)) for ly in layers
            )
        else:
            ctx = ad.capture_neurons(model, layers)
        with ctx as captured, using_last(last.to(dev)):
            model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
        source = captured if site == "neurons" else got
        # index each layer on its own device: only [B, width] per layer reaches the host
        out.append(stack_on([at_last(source[ly], last) for ly in layers], "cpu", 1).float())
    return torch.cat(out)


def _keeper(layer: int, got: dict[int, Tensor]) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    def fn(_mod: nn.Module, _inp: Tensor, out: Tensor) -> Tensor:
        got[layer] = (out[0] if isinstance(out, tuple) else out).detach()
        return out

    return fn


def _mean_difference(
    lm: LoadedModel, positive: Sequence[str], negative: Sequence[str], site: Site, batch_size: int
) -> Tensor:
    if not positive or not negative:
        raise SteeringError(
            f"a control vector needs positive and negative prompts; got {len(positive)} "
            f"positive and {len(negative)} negative"
        )
    pos = last_token_activations(lm, positive, site, batch_size).mean(0)
    neg = last_token_activations(lm, negative, site, batch_size).mean(0)
    return pos - neg


def control_vectors(
    lm: LoadedModel,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    site: Literal["resid", "mlp_out"] = "resid",
    batch_size: int = 32,
) -> Tensor:
    """`[n_layers, d_model]` mean(positive) − mean(negative) at the last prompt token."""
    if site not in ("resid", "mlp_out"):
        raise SteeringError(f"site must be 'resid' or 'mlp_out', got {site!r}")
    return _mean_difference(lm, positive, negative, site, batch_size)


def neuron_differences(
    lm: LoadedModel, positive: Sequence[str], negative: Sequence[str], batch_size: int = 32
) -> Tensor:
    """`[n_layers, d_mlp]` mean difference of the neuron activations at the last prompt token."""
    return _mean_difference(lm, positive, negative, "neurons", batch_size)


@torch.no_grad()
def activation_weighted_vectors(lm: LoadedModel, diffs: Tensor) -> Tensor:
    """`[n_layers, d_model]`: each layer's W_down @ neuron difference."""
    d = lm.dims
    if tuple(diffs.shape) != (d.n_layers, d.d_mlp):
        raise SteeringError(
            f"neuron differences must be [n_layers, d_mlp] = [{d.n_layers}, {d.d_mlp}], "
            f"got {list(diffs.shape)}"
        )
    ad = lm.needs_adapter("CAA's activation-weighted vectors")
    out = []
    for ly in range(d.n_layers):  # on the layer's device: one [d_model] result reaches the host
        w = ad.down_proj_weight(lm.model, ly).detach()
        out.append((w.float() @ to_device_of(diffs[ly], w).float()).cpu())
    return torch.stack(out)


def residual_edit(
    lm: LoadedModel, fn: Callable[[int, Tensor], Tensor], layers: list[int]
) -> AbstractContextManager[Any]:
    """``fn(layer, resid)`` replaces the residual stream after each layer (TL
    ``hook_resid_post``) inside the block: through the adapter, or the bridge's hook."""
    if lm.backend == "transformer_lens":
        return edit_hooks(lm.bridge, resid_post_hook, fn, layers)
    return lm.adapter.edit_residual(lm.model, fn, layers)


@contextmanager
def add_vector(
    lm: LoadedModel,
    layer: int,
    vector: Tensor,
    multiplier: float,
    *,
    positions: Literal["last", "all"] = "last",
    last: Tensor | None = None,
) -> Iterator[None]:
    """Add `multiplier × vector` to the residual stream after `layer` inside the block.

    ``positions="last"``: at each prompt's last token and every later (generated) token —
    positions ≥ `last` ([batch]; else the runners' `using_last`; else the final column).
    ``"all"``: at every position. Hooks are gone after the block; the model is not mutated.
    """
    layer = check_layer(lm, layer)
    m = check_multiplier(multiplier)
    if positions not in ("last", "all"):
        raise SteeringError(f"positions must be 'last' or 'all', got {positions!r}")
    if not isinstance(vector, Tensor) or tuple(vector.shape) != (lm.dims.d_model,):
        got = list(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
        raise SteeringError(
            f"the vector must have shape [d_model] = [{lm.dims.d_model}], got {got}"
        )
    if not bool(torch.isfinite(vector).all()):
        raise SteeringError("the vector holds NaN or inf")

    def edit(_layer: int, hs: Tensor) -> Tensor:
        delta = (m * vector).to(device=hs.device, dtype=hs.dtype)
        if positions == "all":
            return hs + delta
        lst = _resolve_last(last, hs)
        where = torch.arange(hs.shape[1], device=hs.device)[None, :] >= lst[:, None]
        return hs + where[..., None].to(hs.dtype) * delta

    ctx = residual_edit(lm, edit, [layer]) if m != 0.0 else nullcontext()
    with ctx:
        yield


# ------------------------------------------------------------------------------- artifact


def save_vectors(path: str | Path, vectors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write named tensors and string metadata as safetensors, atomically."""
    if not vectors:
        raise SteeringError("no vectors to save")
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise SteeringError(f"safetensors metadata must map strings to strings; bad keys {bad}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in vectors.items()}
    data = canonical_safetensors(save(tensors, metadata=dict(metadata)))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its metadata in sorted order. The library writes the
    metadata from a Rust hash map, whose order changes from process to process, so the same
    vectors would give different bytes on every run (and look edited to DVC and to the rerun
    checks); sorted, the same content gives the same file."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen (same content, reordered); keep the file as written
        return data
    return data[:8] + text.ljust(n, b" ") + data[8 + n :]


def load_vectors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of a `save_vectors` file; ArtifactError if unreadable."""
    p = require(path, "caa")
    try:
        with safe_open(str(p), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{p} is not a readable safetensors file ({exc})") from exc
