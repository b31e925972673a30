"""Batched LRP attribution at the MLP neurons: one forward and one backward pass per batch.

The attribution of neuron `n` of layer `l` at position `p` is `a · ∂M/∂a`, where `a` is the
neuron's activation (the down-projection input) and `M` the prompt's metric read at its own
last position. Under `linearized` (the LRP rules) this is the neuron's relevance.

Positions are counted **from each prompt's end**: offset −1 is the prompt's last token, −2 the
one before, and so on. Prompts of a task have different lengths, so only end-relative offsets
line up across prompts; a circuit key `"layer,position,neuron"` therefore carries a negative
position. The `scores` tensor's position axis runs over offsets −P … −1 (index j ↔ offset
j − P); cells that fall before a prompt's start (or on its BOS when `filter_bos`) are zero and
marked invalid.

Everything is vectorised: no Python loop over positions or neurons and no per-element
`.item()`; prompts are right-padded and batched (`PromptBatch`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from circuitlab.devices import at_last, stack_on, to_device_of
from circuitlab.errors import ArtifactError, DatasetError, ModelError
from circuitlab.io import atomic_path
from circuitlab.lrp.rules import linearized
from circuitlab.lrp.settings import LrpConfig
from circuitlab.models.loading import LoadedModel
from circuitlab.progress import bar as progress_bar
from circuitlab.prompts import PromptBatch, batches, encode_rows
from circuitlab.types import TaskRow

Metric = Literal["target", "logit_diff", "top_other"]
METRICS: tuple[str, ...] = ("target", "logit_diff", "top_other")


@dataclass(frozen=True)
class AttributionOptions:
    """What to attribute and where (the seed's `compute_attribution` options).

    `filter_bos` drops position 0; `last_n_positions` keeps each prompt's last N positions
    and, as in the seed, then replaces the BOS filter. `top_k_per_layer` keeps the k largest
    |attribution| per prompt, layer and position (the seed's sparsification).
    """

    metric: Metric = "logit_diff"
    attention_rule: str = "full"
    lrp: bool = True  # False: plain gradient × activation (no rules)
    filter_bos: bool = True
    last_n_positions: int | None = None
    top_k_per_layer: int | None = None
    skip_layers: frozenset[int] = frozenset()
    skip_neurons: frozenset[tuple[int, int]] = frozenset()  # (layer, neuron), e.g. a blacklist
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ModelError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")


@dataclass
class Attributions:
    """Per-prompt attributions of one prompt set: the raw scores a selection works from."""

    scores: Tensor  # [prompts, layers, positions, d_mlp] float32 (CPU)
    metric: Tensor  # [prompts] metric value of each prompt
    valid: Tensor  # [prompts, positions] bool: the offset exists for the prompt
    ids: tuple[str, ...] = field(default=())

    @property
    def n_positions(self) -> int:
        return int(self.scores.shape[2])

    def offsets(self) -> list[int]:
        """The position axis as end-relative offsets (−P … −1)."""
        return list(range(-self.n_positions, 0))

    def save(self, path: str | Path) -> None:
        """Write as safetensors (atomic): the raw scores a new selection can reuse."""
        tensors = {
            "scores": self.scores.contiguous(),
            "metric": self.metric.contiguous(),
            "valid": self.valid.to(torch.uint8).contiguous(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"ids": "\n".join(self.ids)})

    @classmethod
    def load(cls, path: str | Path) -> Attributions:
        try:
            with safe_open(str(path), "pt") as f:
                t = {name: f.get_tensor(name) for name in ("scores", "metric", "valid")}
                meta = f.metadata() or {}
            out = cls(t["scores"], t["metric"], t["valid"].bool(), tuple(_split_ids(meta)))
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as exc:
            raise ArtifactError(f"{path}: not a circuitlab attribution file ({exc})") from exc
        if out.scores.ndim != 4 or out.metric.shape[0] != out.scores.shape[0]:
            raise ArtifactError(f"{path}: attribution tensors have inconsistent shapes")
        return out


def _split_ids(meta: dict[str, str]) -> list[str]:
    ids = meta.get("ids", "")
    return ids.split("\n") if ids else []


# ------------------------------------------------------------------------ metric
#: vocabulary rows of the unembedding upcast to float32 at a time by `readout_logits` (bounds
#: its transient copy: 16,384 rows of a 4,096-wide model are 256 MiB)
READOUT_ROWS = 16_384


def metric_values(logits: Tensor, target: Tensor, counterfactual: Tensor, metric: Metric) -> Tensor:
    """`[batch]` metric from last-position logits `[batch, vocab]` (seed semantics), computed
    on the logits' device (the last shard of a split model)."""
    tgt = at_last(logits, target)
    if metric == "target":
        return tgt
    if metric == "logit_diff":
        return tgt - at_last(logits, counterfactual)
    others = logits.scatter(1, to_device_of(target, logits)[:, None], float("-inf"))
    return tgt - others.max(-1).values


def readout_logits(lm: LoadedModel, batch: PromptBatch) -> Tensor:
    """`[batch, vocab]` float32 logits at each prompt's last token, from one forward pass of
    the model (under whatever hooks the caller holds).

    On a float32 model these are the model's own logits. A bf16 model rounds its logits to
    bf16 (a logit near 10 moves in steps of 0.06), coarser than one neuron's effect on a
    metric, and the metric is a difference of two such numbers. So on a reduced-precision
    model the unembedding is applied again, in float32, to the last position's unembedding
    input: the model's own activation in its own dtype, read out without the final rounding.
    Only this readout is float32 (`READOUT_ROWS` vocabulary rows at a time); the model is
    never upcast. Gradients flow through it as through the model's logits.
    """
    model = lm.model
    if model.dtype == torch.float32:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return at_last(logits, batch.last)
    adapter = lm.needs_adapter("the float32 metric readout")
    unembed = adapter.root(model, "unembed")
    seen: dict[str, Tensor] = {}

    def keep(_mod: nn.Module, inp: Tensor, out: Tensor) -> Tensor:
        seen["h"] = inp
        return out

    with adapter.replace_outputs([(unembed, keep)]):
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    h = at_last(seen["h"], batch.last).float()
    weight, bias = unembed.weight, getattr(unembed, "bias", None)
    logits = torch.cat([h @ w.float().T for w in weight.split(READOUT_ROWS)], -1)  # [batch, vocab]
    if isinstance(bias, Tensor):
        logits = logits + bias.float()
    cap = adapter.logit_softcap(model.config)
    return logits if cap is None else torch.tanh(logits / cap) * cap


# ------------------------------------------------------------------- one batch
def attribute_batch(
    lm: LoadedModel, batch: PromptBatch, n_positions: int, opts: AttributionOptions
) -> tuple[Tensor, Tensor, Tensor]:
    """Attribution for one batch: `(scores [B, L, P, D], metric [B], valid [B, P])`.

    Runs under the LRP rules (unless `opts.lrp` is False). Raises ModelError naming the layer
    when a gradient is NaN or infinite.
    """
    batch.require_answers("LRP attribution")
    if opts.metric == "logit_diff":
        same = (batch.target == batch.counterfactual).nonzero().flatten().tolist()
        if same:
            raise DatasetError(
                "target and counterfactual are the same token in rows "
                + ", ".join(batch.ids[i] for i in same)
                + "; the logit difference would be identically zero"
            )
    batch = batch.to(lm.device)
    model, adapter = lm.model, lm.needs_adapter("LRP attribution")
    n_layers = lm.dims.n_layers
    with (
        torch.enable_grad(),
        linearized(model, adapter, opts.attention_rule, lrp=opts.lrp),
        adapter.capture_neurons(model, detach=False) as acts,
    ):
        last_logits = readout_logits(lm, batch)
        metric = metric_values(last_logits, batch.target, batch.counterfactual, opts.metric)
        layers = [acts[layer] for layer in range(n_layers)]
        if not layers[0].requires_grad:
            raise ModelError(
                "the model's parameters do not require gradients; attribution needs them "
                "(load the model without freezing it)"
            )
        grads = torch.autograd.grad(metric.sum(), layers)
    _check_finite(grads)
    # end-relative gather: offset j − P of prompt b sits at position last_b − P + 1 + j
    pos = batch.last[:, None] - n_positions + 1 + torch.arange(n_positions, device=lm.device)
    # seed semantics: a last-N window replaces the BOS filter
    start = 1 if opts.filter_bos and opts.last_n_positions is None else 0
    valid = pos >= start
    index = pos.clamp(min=0)[:, :, None].expand(-1, -1, lm.dims.d_mlp)  # [B, P, D]
    # each layer's act × grad on its own device (a split model's layers live on several)
    per_layer = [
        (a.detach().float() * g.float()).gather(1, to_device_of(index, a))
        * to_device_of(valid, a)[:, :, None]
        for a, g in zip(layers, grads, strict=True)
    ]
    scores = _sparsify(stack_on(per_layer, lm.device, 1), opts, n_layers)  # [B, L, P, D]
    return scores.cpu(), metric.detach().cpu(), valid.cpu()


def _check_finite(grads: Sequence[Tensor]) -> None:
    bad = [layer for layer, g in enumerate(grads) if not bool(torch.isfinite(g).all())]
    if bad:
        raise ModelError(
            f"NaN or infinite gradient at the MLP neurons of layer(s) {bad}; the LRP rules are "
            "not numerically stable for this model/dtype (try float32, or attention_rule 'cp_attn')"
        )


def _sparsify(scores: Tensor, opts: AttributionOptions, n_layers: int) -> Tensor:
    if opts.skip_layers:
        bad = [layer for layer in opts.skip_layers if not 0 <= layer < n_layers]
        if bad:
            raise ModelError(f"skip_layers {bad} out of range for a {n_layers}-layer model")
        keep = torch.ones(n_layers, dtype=torch.bool, device=scores.device)
        keep[list(opts.skip_layers)] = False
        scores = scores * keep[None, :, None, None]
    if opts.skip_neurons:
        mask = torch.ones(scores.shape[1], scores.shape[3], dtype=torch.bool, device=scores.device)
        pairs = torch.tensor(sorted(opts.skip_neurons), device=scores.device)
        inside = (pairs[:, 0] < scores.shape[1]) & (pairs[:, 1] < scores.shape[3])
        pairs = pairs[inside]
        mask[pairs[:, 0], pairs[:, 1]] = False
        scores = scores * mask[None, :, None, :]
    k = opts.top_k_per_layer
    if k is not None and k < scores.shape[-1]:
        top = scores.abs().topk(k, dim=-1).indices
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
        scores = scores * keep
    return scores


# ------------------------------------------------------------------ prompt sets
def attribute_rows(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    opts: AttributionOptions,
    *,
    progress: bool = True,
) -> Attributions:
    """Attributions of every row (batched), on a common end-relative position axis."""
    if not rows:
        raise DatasetError("no rows to attribute")
    encoded = [encode_rows(chunk, lm.tokenizer) for chunk in batches(rows, opts.batch_size)]
    longest = max(int(b.last.max()) + 1 for b in encoded)
    n_positions = min(opts.last_n_positions or longest, longest)
    parts = [
        attribute_batch(lm, b, n_positions, opts)
        for b in progress_bar(encoded, desc="attribution", unit="batch", enabled=progress)
    ]
    scores, metric, valid = (torch.cat(p) for p in zip(*parts, strict=True))
    return Attributions(scores, metric, valid, tuple(r.id for r in rows))


def last_activations(lm: LoadedModel, rows: Sequence[TaskRow], batch_size: int = 32) -> Tensor:
    """Each row's neuron activations at its prompt's last token, `[rows, layers, d_mlp]`."""
    out = []
    for chunk in batches(rows, batch_size):
        batch = encode_rows(chunk, lm.tokenizer).to(lm.device)
        with torch.no_grad(), lm.needs_adapter("LRP attribution").capture_neurons(lm.model) as acts:
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        out.append(stack_on([at_last(acts[layer], batch.last) for layer in sorted(acts)], "cpu", 1))
    return torch.cat(out).float()


# --------------------------------------------------------------------------- stage
def options(
    cfg: LrpConfig, skip_neurons: Collection[tuple[int, int]] = (), **over: Any
) -> AttributionOptions:
    """Attribution options from the `lrp` config section (plus a blacklist)."""
    base: dict[str, Any] = dict(
        metric=cfg.metric,
        attention_rule=cfg.attention_rule,
        filter_bos=cfg.filter_bos,
        last_n_positions=cfg.last_n_positions,
        top_k_per_layer=cfg.top_k_per_layer,
        skip_layers=frozenset(cfg.skip_layers),
        skip_neurons=frozenset(skip_neurons),
        batch_size=cfg.batch_size,
    )
    return AttributionOptions(**{**base, **over})


def attribute_lrp(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    cfg: LrpConfig,
    *,
    task: str,
    blacklist: Collection[tuple[int, int]] = (),
    progress: bool = True,
) -> tuple[Attributions, dict[str, Any]]:
    """The expensive half of an LRP circuit: per-prompt attributions of the train split (the
    `selection` settings are not read), and the metrics of that step. The cheap half,
    selection, is `circuitlab.lrp.discover.select_lrp`."""
    train = [r for r in rows if r.split == "train"]
    if not train:
        raise DatasetError(f"{task}: no train rows to discover a circuit on")
    t0 = time.perf_counter()
    attr = attribute_rows(lm, train, options(cfg, blacklist), progress=progress)
    metrics = {
        "n_prompts": int(attr.scores.shape[0]),
        "n_positions": attr.n_positions,
        "blacklisted": len(blacklist),
        "attribution_seconds": time.perf_counter() - t0,
    }
    return attr, metrics
