"""Universal-neuron detection: the artifact `data/blacklists/{model}.json`.

A *universal* neuron fires strongly whatever the prompt (an attention-sink-like or bias-like
unit). It shows up in every attribution and would crowd out task-specific neurons, so circuit
discovery skips the blacklist.

Semantics (following the seed's `detect_universal_neurons`): for each prompt, take every
layer's MLP neuron activations (the down-projection input) at the prompt's **last** token and
the `top_k` neurons of largest |activation| in that layer. A neuron's *count* is the number of
prompts in whose top-k it is. It is universal when its count reaches
`required_count(threshold_fraction, n_prompts)` = ⌈threshold_fraction · n_prompts⌉ (see there;
the seed floors instead, which differs only when the product is not a whole number — we keep
the promise "in at least that share of the prompts").

Known universal neurons of Llama-3.1-8B (found by TransluceAI, listed in the seed) are added
when the model has that shape (`known_neurons_for`); never by model name.

The artifact it writes (`Blacklist`, `BlacklistFile`) is `circuitlab.blacklist.artifact`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from circuitlab.blacklist.artifact import (
    KNOWN_LLAMA31_8B,
    LLAMA31_8B_SHAPE,
    Blacklist,
    BlacklistFile,
    Pair,
    is_int,
    is_number,
    known_neurons_for,
    required_count,
)
from circuitlab.devices import at_last, stack_on
from circuitlab.errors import ConfigError, DatasetError
from circuitlab.progress import bar as progress_bar
from circuitlab.prompts import pad_id, right_pad

if TYPE_CHECKING:
    from circuitlab.models.loading import LoadedModel

__all__ = [
    "KNOWN_LLAMA31_8B",
    "LLAMA31_8B_SHAPE",
    "MIN_PROMPTS",
    "Blacklist",
    "BlacklistFile",
    "detect_universal_neurons",
    "known_neurons_for",
    "required_count",
]

MIN_PROMPTS = 20


def detect_universal_neurons(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    top_k: int = 50,
    threshold_fraction: float = 0.8,
    batch_size: int = 32,
    known_if_shape_matches: bool = True,
    progress: bool = False,
) -> Blacklist:
    """Detect the universal neurons of `lm` over `prompts` (module docstring: semantics).

    Prompts are tokenized as the model sees them (with the tokenizer's special tokens, e.g.
    BOS), right-padded in batches of `batch_size` with an attention mask, and each prompt's
    own last real token is read, so the result does not depend on `batch_size` or padding.
    The model is not changed (hooks are removed on exit). Stability: see `Blacklist`.

    Raises:
        ConfigError: fewer than 20 prompts, a blank or repeated prompt, `threshold_fraction`
            outside (0, 1], `top_k` outside 1..d_mlp, or `batch_size` < 1.
        DatasetError: prompts the tokenizer maps to its unknown token, or to no tokens.
    """
    dims = lm.dims
    prompts = _check_inputs(prompts, top_k, threshold_fraction, batch_size, dims.d_mlp)
    ids = _encode(lm, prompts)
    hits = _top_neurons(lm, ids, top_k, batch_size, progress)  # [n, n_layers, top_k]
    n = len(prompts)
    counts = _counts(hits, dims.d_mlp)
    neurons = _universal(counts, required_count(threshold_fraction, n))
    stability: float | None = None
    half = n // 2
    if half >= 2 and neurons:
        a = _universal(_counts(hits[:half], dims.d_mlp), required_count(threshold_fraction, half))
        b = _universal(
            _counts(hits[half:], dims.d_mlp), required_count(threshold_fraction, n - half)
        )
        stability = len(set(a) & set(b)) / len(neurons)
    known = sorted(known_neurons_for(dims)) if known_if_shape_matches else []
    return Blacklist(
        neurons=neurons,
        n_prompts=n,
        top_k=top_k,
        threshold_fraction=float(threshold_fraction),
        stability=stability,
        known=known,
        n_layers=dims.n_layers,
        d_mlp=dims.d_mlp,
    )


def _check_inputs(
    prompts: Sequence[str], top_k: int, fraction: float, batch_size: int, d_mlp: int
) -> list[str]:
    if isinstance(prompts, str):
        raise ConfigError("blacklist.prompts must be a list of prompts, not one string")
    prompts = list(prompts)
    if len(prompts) < MIN_PROMPTS:
        raise ConfigError(
            f"blacklist.prompts has {len(prompts)} prompts; universal-neuron detection needs at "
            f"least {MIN_PROMPTS} diverse prompts unrelated to the tasks"
        )
    blank = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if blank:
        raise ConfigError(f"blacklist.prompts has empty or non-text prompts at indices {blank}")
    repeated = sorted(p for p, c in Counter(p.strip() for p in prompts).items() if c > 1)
    if repeated:
        raise ConfigError(
            f"blacklist.prompts repeats {repeated}; a repeated prompt counts twice — give "
            "distinct prompts"
        )
    if not (is_number(fraction) and 0 < fraction <= 1):
        raise ConfigError(f"blacklist.threshold_fraction must be in (0, 1], got {fraction!r}")
    if not (is_int(top_k) and 1 <= top_k <= d_mlp):
        raise ConfigError(f"blacklist.top_k must be in 1..d_mlp={d_mlp}, got {top_k!r}")
    if not (is_int(batch_size) and batch_size >= 1):
        raise ConfigError(f"blacklist.batch_size must be a positive integer, got {batch_size!r}")
    return prompts


def _encode(lm: LoadedModel, prompts: list[str]) -> list[list[int]]:
    """Token ids per prompt (with special tokens); DatasetError on unknown/empty tokenization."""
    tok = lm.tokenizer
    ids = [list(x) for x in tok(prompts)["input_ids"]]
    unk = tok.unk_token_id
    # A tokenizer whose unk id doubles as another special token (GPT-2's <|endoftext|>) cannot
    # mark unknown text with it; only check a dedicated unknown token.
    others = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    problems: list[str] = []
    if unk is not None and unk not in others:
        plain = tok(prompts, add_special_tokens=False)["input_ids"]
        problems += [
            f"{p!r} (unknown token)" for p, x in zip(prompts, plain, strict=True) if unk in x
        ]
    problems += [f"{p!r} (no tokens)" for p, x in zip(prompts, ids, strict=True) if not x]
    if problems:
        shown = "; ".join(problems[:20]) + (
            f"; … {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise DatasetError(
            f"{len(problems)} blacklist prompt(s) do not tokenize cleanly for this model: {shown}. "
            "Use words the tokenizer knows (the toy model knows only its corpus words)"
        )
    return ids


def _top_neurons(
    lm: LoadedModel, ids: list[list[int]], top_k: int, batch_size: int, progress: bool
) -> Tensor:
    """`[n_prompts, n_layers, top_k]` indices of each layer's top-k |activation| at each
    prompt's last token, on `lm.device`."""
    device, n_layers = lm.device, lm.dims.n_layers
    pad = pad_id(lm.tokenizer)
    out: list[Tensor] = []
    starts = range(0, len(ids), batch_size)
    for start in progress_bar(starts, desc="blacklist", unit="batch", enabled=progress):
        input_ids, mask, last_index = (
            t.to(device) for t in right_pad(ids[start : start + batch_size], pad)
        )
        with (
            torch.no_grad(),
            lm.needs_adapter("the neuron blacklist").capture_neurons(lm.model) as acts,
        ):
            lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        # [batch, n_layers, d_mlp], each layer indexed on its own device
        last = stack_on([at_last(acts[layer], last_index) for layer in range(n_layers)], device, 1)
        out.append(last.float().abs().topk(top_k, dim=-1).indices)
    return torch.cat(out)


def _counts(hits: Tensor, d_mlp: int) -> Tensor:
    """`[n_layers, d_mlp]` number of prompts whose top-k holds each neuron (a prompt's top-k
    indices are distinct, so one prompt adds at most 1 to a neuron)."""
    n_layers = hits.shape[1]
    offsets = torch.arange(n_layers, device=hits.device)[None, :, None] * d_mlp
    flat = (hits + offsets).reshape(-1)
    return torch.bincount(flat, minlength=n_layers * d_mlp).view(n_layers, d_mlp)


def _universal(counts: Tensor, need: int) -> dict[Pair, int]:
    """{(layer, neuron): count} for counts >= need, in (layer, neuron) order."""
    where = (counts >= need).nonzero()
    values = counts[where[:, 0], where[:, 1]].tolist()
    return {(int(ly), int(n)): int(c) for (ly, n), c in zip(where.tolist(), values, strict=True)}
