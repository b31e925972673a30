"""Neuron steering: multiply chosen MLP neurons (the down-projection input) by a multiplier.

`steer_neurons` goes through the architecture adapter (`edit_neurons`), so it works for every
registered family, batches, and leaves no hook behind. Positions are end-relative as in the
neuron-circuit artifact (−1 is each prompt's last token): with ``positions="circuit"`` a neuron
is only steered at the offsets the circuit found it at, counted from each prompt's own last
token, which the runners of this module (`next_token_probs`, `generate`, `last_logits`) publish
through `using_last`; an explicit ``last`` tensor overrides it.

The runners right-pad prompt batches (BOS and other special tokens included, as in
`circuitlab.prompts`) and read each prompt at its own last position, so a batched call gives
the same numbers as one call per prompt. `generate` is a greedy loop without a KV cache, so
every forward pass sees the whole sequence and steering applies to generated tokens too.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from circuitlab.devices import at_last
from circuitlab.errors import CircuitlabError
from circuitlab.prompts import encode_prompts
from circuitlab.types import NeuronKey

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.models.adapters import ModelDims
    from circuitlab.models.loading import LoadedModel

Positions = Literal["all", "circuit"]

#: each prompt's last index for the forward passes in progress (set by `using_last`)
_LAST: ContextVar[Tensor | None] = ContextVar("circuitlab_steering_last", default=None)


class SteeringError(CircuitlabError):
    """Bad steering input: an empty or out-of-range neuron set, a bad multiplier, layer or
    token, a behaviour without prompts."""


# ------------------------------------------------------------------------------ neuron sets


@dataclass(frozen=True)
class NeuronSet:
    """Neurons to steer: sorted unique `(layer, position, neuron)` keys.

    `position` is an end-relative offset (< 0) for a set built from a circuit, or None for
    every key of a set built from `(layer, neuron)` pairs (steered at all positions).
    """

    keys: tuple[NeuronKey, ...]

    def __post_init__(self) -> None:
        with_pos = {p is not None for _, p, _ in self.keys}
        if len(with_pos) > 1:
            raise SteeringError(
                "a neuron set gives either every neuron a position or none; got a mix"
            )

    @classmethod
    def from_circuit(cls, circuit: NeuronCircuit) -> NeuronSet:
        """The circuit's `(layer, position, neuron)` keys (positions end-relative)."""
        return cls(tuple(sorted({(int(ly), int(p), int(n)) for ly, p, n in circuit.neurons})))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]]) -> NeuronSet:
        """`(layer, neuron)` pairs, steered at every position."""
        try:
            keys = {(int(ly), None, int(n)) for ly, n in pairs}
        except (TypeError, ValueError) as exc:
            raise SteeringError(f"neuron pairs must be (layer, neuron) integers ({exc})") from exc
        return cls(tuple(sorted(keys, key=lambda k: (k[0], k[2]))))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def has_positions(self) -> bool:
        return bool(self.keys) and self.keys[0][1] is not None

    def pairs(self) -> list[tuple[int, int]]:
        """Sorted unique `(layer, neuron)` pairs (positions dropped)."""
        return sorted({(ly, n) for ly, _, n in self.keys})

    def per_layer(self) -> dict[int, list[int]]:
        """Layer → sorted unique neuron indices (only layers holding a neuron)."""
        out: dict[int, set[int]] = defaultdict(set)
        for ly, _, n in self.keys:
            out[ly].add(n)
        return {ly: sorted(ns) for ly, ns in sorted(out.items())}

    def per_layer_positions(self) -> dict[int, list[tuple[int, int]]]:
        """Layer → sorted `(position, neuron)` pairs; SteeringError for a set without positions."""
        if not self.has_positions:
            raise SteeringError(
                "this neuron set has no positions (built from (layer, neuron) pairs); steer it "
                "with positions='all' or build it from a circuit"
            )
        out: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for ly, p, n in self.keys:
            out[ly].append((int(p), n))  # type: ignore[arg-type]
        return {ly: sorted(v) for ly, v in sorted(out.items())}

    def validate(self, dims: ModelDims) -> NeuronSet:
        """Self, or SteeringError naming what is wrong (empty, layer/neuron/position range)."""
        if not self.keys:
            raise SteeringError(
                "the neuron set is empty (an empty circuit?); nothing to steer. Loosen the "
                "circuit selection (e.g. lrp.selection.threshold) or give neurons"
            )
        bad_layer = sorted({ly for ly, _, _ in self.keys if not 0 <= ly < dims.n_layers})
        if bad_layer:
            raise SteeringError(
                f"neuron layers {bad_layer[:5]} are outside the model's 0..{dims.n_layers - 1}; "
                "was the circuit discovered on another model?"
            )
        bad = [(ly, n) for ly, _, n in self.keys if not 0 <= n < dims.d_mlp]
        if bad:
            raise SteeringError(
                f"neurons {bad[:5]} (layer, neuron) are outside 0..{dims.d_mlp - 1} (d_mlp = "
                f"{dims.d_mlp}); was the circuit discovered on another model?"
            )
        bad_pos = sorted({p for _, p, _ in self.keys if p is not None and p >= 0})
        if bad_pos:
            raise SteeringError(
                f"positions {bad_pos[:5]} are not end-relative offsets (−1 is the last token)"
            )
        return self

    def random_matched(
        self,
        dims: ModelDims,
        seed: int,
        *,
        exclude_own: bool = True,
        avoid: Iterable[tuple[int, int]] = (),
    ) -> NeuronSet:
        """A random control: per layer (and per position, for a set with positions) as many
        neurons as this set has there, drawn uniformly without replacement — avoiding this
        set's own neurons of that layer, and the `(layer, neuron)` pairs of `avoid` (e.g. the
        rest of the circuit a subset was taken from), while enough others remain."""
        rng = np.random.default_rng(seed)
        groups: dict[tuple[int, int | None], int] = defaultdict(int)
        for ly, p, _ in self.keys:
            groups[(ly, p)] += 1
        own: dict[int, list[int]] = defaultdict(list)
        for ly, ns in self.per_layer().items():
            own[ly].extend(ns)
        for ly, n in avoid:
            own[int(ly)].append(int(n))
        keys: list[NeuronKey] = []
        for (ly, p), count in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            pool = np.arange(dims.d_mlp)
            if exclude_own:
                others = np.setdiff1d(pool, own.get(ly, []))
                pool = others if len(others) >= count else pool
            picked = rng.choice(pool, size=min(count, len(pool)), replace=False)
            keys.extend((ly, p, int(n)) for n in picked)
        if self.has_positions:
            return NeuronSet(tuple(sorted(keys)))  # type: ignore[type-var]
        return NeuronSet(tuple(sorted(keys, key=lambda k: (k[0], k[2]))))


# ----------------------------------------------------------------------------- validation


def check_multiplier(multiplier: object) -> float:
    """`multiplier` as a float, or SteeringError for a non-numeric or non-finite value."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real):
        raise SteeringError(f"a multiplier must be a number, got {multiplier!r}")
    value = float(multiplier)
    if not math.isfinite(value):
        raise SteeringError(f"a multiplier must be finite, got {multiplier!r}")
    return value


def parse_multipliers(text: str | Sequence[object]) -> list[float]:
    """Multipliers from a comma/space-separated string or a list; SteeringError naming the bad."""
    items: Sequence[object]
    items = [t for t in text.replace(",", " ").split() if t] if isinstance(text, str) else text
    out = []
    for item in items:
        try:
            value = float(item) if isinstance(item, str) else item
        except ValueError:
            raise SteeringError(f"multiplier {item!r} is not a number") from None
        out.append(check_multiplier(value))
    if not out:
        raise SteeringError("no multipliers given")
    return out


# ----------------------------------------------------------------------- position context


@contextmanager
def using_last(last: Tensor) -> Iterator[None]:
    """Inside the block, steering hooks read each prompt's last index (shape [batch]) from
    `last` unless they were given their own. The runners of this module set it per batch."""
    token = _LAST.set(last)
    try:
        yield
    finally:
        _LAST.reset(token)


def _resolve_last(explicit: Tensor | None, x: Tensor) -> Tensor:
    """Each row's last prompt index for activations `x` [batch, seq, …]."""
    last = explicit if explicit is not None else _LAST.get()
    if last is None:  # an unpadded forward outside our runners: its final column
        return torch.full((x.shape[0],), x.shape[1] - 1, dtype=torch.long, device=x.device)
    last = last.to(device=x.device, dtype=torch.long).reshape(-1)
    if last.shape[0] != x.shape[0]:
        raise SteeringError(
            f"`last` has {last.shape[0]} entries but the batch has {x.shape[0]} prompts"
        )
    return last


# ------------------------------------------------------------------------------- steering


@contextmanager
def steer_neurons(
    lm: LoadedModel,
    neurons: NeuronSet,
    multiplier: float,
    *,
    positions: Positions = "all",
    last: Tensor | None = None,
) -> Iterator[None]:
    """Multiply `neurons`' activations (down-projection inputs) by `multiplier` in every
    forward pass inside the block: 0 ablates, 1 changes nothing, 2 doubles.

    ``positions="all"`` steers each neuron at every position; ``"circuit"`` only at its
    end-relative offsets, counted from each prompt's last index (`last` [batch], else the
    runners' `using_last`, else the final column). The model is never mutated and the hooks
    are gone after the block, even on error.
    """
    m = check_multiplier(multiplier)
    neurons.validate(lm.dims)
    if positions not in ("all", "circuit"):
        raise SteeringError(f"positions must be 'all' or 'circuit', got {positions!r}")
    device = lm.device
    if positions == "all":
        index = {ly: torch.tensor(ns, device=device) for ly, ns in neurons.per_layer().items()}

        def edit(layer: int, x: Tensor) -> Tensor:
            idx = index[layer].to(x.device)
            out = x.clone()
            out[..., idx] = x[..., idx] * m
            return out
    else:
        table = {
            ly: (
                torch.tensor([p for p, _ in pn], device=device),
                torch.tensor([n for _, n in pn], device=device),
            )
            for ly, pn in neurons.per_layer_positions().items()
        }

        def edit(layer: int, x: Tensor) -> Tensor:
            offs, neur = (t.to(x.device) for t in table[layer])
            lst = _resolve_last(last, x)
            pos = lst[:, None] + 1 + offs[None, :]  # offset −1 ↔ the last index
            ok = (pos >= 0) & (pos < x.shape[1])
            rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(pos)
            b, p, n = rows[ok], pos[ok], neur[None, :].expand_as(pos)[ok]
            out = x.clone()
            out[b, p, n] = x[b, p, n] * m
            return out

    adapter = lm.needs_adapter("neuron steering")
    with adapter.edit_neurons(lm.model, edit, list(index if positions == "all" else table)):
        yield


# -------------------------------------------------------------------------------- runners


def token_ids(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> list[int]:
    """The id of each token string; SteeringError for one that is not exactly one token."""
    if isinstance(tokens, str):
        tokens = [tokens]
    out, bad = [], []
    for tok in tokens:
        ids = tokenizer(tok, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            bad.append(f"{tok!r} → {tokenizer.convert_ids_to_tokens(ids)}")
        else:
            out.append(int(ids[0]))
    if bad:
        raise SteeringError(
            f"tokens must be single tokens for this tokenizer; not single: {'; '.join(bad[:5])}"
        )
    return out


@torch.no_grad()
def last_logits(lm: LoadedModel, input_ids: Tensor, attention_mask: Tensor, last: Tensor) -> Tensor:
    """`[batch, vocab]` float32 logits at each prompt's last index (steering hooks see `last`)."""
    dev = lm.device
    last = last.to(dev)
    with using_last(last):
        logits = lm.model(
            input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False
        ).logits
    return at_last(logits, last).float()


def prompt_logits(lm: LoadedModel, prompts: Sequence[str], batch_size: int = 32) -> Tensor:
    """`[n_prompts, vocab]` next-token logits of raw prompts, batched (CPU float32)."""
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, last = encode_prompts(lm.tokenizer, prompts[start : start + batch_size])
        out.append(last_logits(lm, ids, mask, last).cpu())
    if not out:
        raise SteeringError("no prompts given")
    return torch.cat(out)


def next_token_probs(
    lm: LoadedModel, prompts: Sequence[str], tokens: Sequence[str], batch_size: int = 32
) -> Tensor:
    """`[n_prompts, n_tokens]` next-token probabilities of single-token strings."""
    ids = token_ids(lm.tokenizer, tokens)
    probs = prompt_logits(lm, prompts, batch_size).softmax(-1)
    return probs[:, ids]


def top_predictions(lm: LoadedModel, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The `k` most likely next tokens of one prompt with their probabilities."""
    if k < 1:
        raise SteeringError(f"k must be >= 1, got {k}")
    probs = prompt_logits(lm, [prompt])[0].softmax(-1)
    top = probs.topk(min(k, probs.shape[0]))
    return [
        (lm.tokenizer.decode([int(i)]), float(p))
        for p, i in zip(top.values, top.indices, strict=True)
    ]


@torch.no_grad()
def generate(
    lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 20, batch_size: int = 32
) -> list[str]:
    """Greedy continuations of `prompts` (only the new text), batched, stopping at EOS.

    No KV cache: every step runs the whole sequence, so steering contexts apply to the prompt
    and to every generated token, and `using_last` keeps pointing at the prompt's last token.
    """
    if max_new_tokens < 0:
        raise SteeringError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts.extend(_generate_batch(lm, prompts[start : start + batch_size], max_new_tokens))
    if not prompts:
        raise SteeringError("no prompts given")
    return texts


def _generate_batch(lm: LoadedModel, prompts: Sequence[str], max_new: int) -> list[str]:
    tok, dev = lm.tokenizer, lm.device
    ids, mask, last = encode_prompts(tok, prompts)
    n, width = ids.shape
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    buf = torch.full((n, width + max_new), pad, dtype=torch.long, device=dev)
    att = torch.zeros_like(buf)
    buf[:, :width], att[:, :width] = ids.to(dev), mask.to(dev)
    last, cur = last.to(dev), last.clone().to(dev)
    rows = torch.arange(n, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    eos = tok.eos_token_id
    with using_last(last):
        for _ in range(max_new):
            stop = int(cur.max()) + 1
            logits = lm.model(
                input_ids=buf[:, :stop], attention_mask=att[:, :stop], use_cache=False
            )
            nxt = logits.logits[rows, cur].argmax(-1)
            live = ~done
            cur = cur + live.long()
            buf[rows[live], cur[live]] = nxt[live]
            att[rows[live], cur[live]] = 1
            if eos is not None:
                done |= live & (nxt == eos)
            if bool(done.all()):
                break
    return [
        tok.decode(buf[i, int(last[i]) + 1 : int(cur[i]) + 1].tolist(), skip_special_tokens=True)
        for i in range(n)
    ]
