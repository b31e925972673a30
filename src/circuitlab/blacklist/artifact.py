"""The blacklist artifact, ``data/blacklists/{model}.json``: `Blacklist` (the universal neurons
with their counts, the detection's settings and its split-half stability) and its file model
`BlacklistFile`; which neurons prior work knows as universal for a model of a given shape
(`known_neurons_for`). No torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import Field, model_validator

from circuitlab.artifact import Artifact
from circuitlab.errors import ConfigError

Pair = tuple[int, int]  # (layer, neuron)

#: (n_layers, d_mlp) of Llama-3.x-8B.
LLAMA31_8B_SHAPE: tuple[int, int] = (32, 14336)
#: Its vocabulary size: Mistral-7B has the same (n_layers, d_mlp), so the shape alone would
#: apply Llama's neuron indices to an unrelated model; the vocabulary tells the two apart.
LLAMA31_8B_VOCAB = 128256

#: Universal neurons of Llama-3.1-8B known from prior work (the seed's `BLACKLIST_LLAMA3_8B`).
KNOWN_LLAMA31_8B: frozenset[Pair] = frozenset(
    {
        (23, 306), (20, 3972), (18, 7417), (16, 1241), (13, 4208), (11, 11321),
        (10, 11570), (9, 4255), (7, 6673), (6, 5866), (5, 7012), (2, 4786),
    }
)  # fmt: skip


class _Shape(Protocol):
    @property
    def n_layers(self) -> int: ...
    @property
    def d_mlp(self) -> int: ...


class _ShapeVocab(_Shape, Protocol):
    @property
    def vocab_size(self) -> int: ...


def required_count(threshold_fraction: float, n_prompts: int) -> int:
    """The smallest count that makes a neuron universal: ⌈threshold_fraction · n_prompts⌉
    (at least 1). The product is rounded to 9 decimals first, so float error cannot push a
    whole number up (0.7 · 10 = 7.000000000000001 needs 7 prompts, not 8)."""
    return max(1, math.ceil(round(threshold_fraction * n_prompts, 9)))


def known_neurons_for(dims: _ShapeVocab) -> frozenset[Pair]:
    """The known universal neurons for a model of this shape: `KNOWN_LLAMA31_8B` when
    (n_layers, d_mlp) == `LLAMA31_8B_SHAPE` and the vocabulary is Llama-3's, else empty."""
    shape = (int(dims.n_layers), int(dims.d_mlp))
    if shape == LLAMA31_8B_SHAPE and int(dims.vocab_size) == LLAMA31_8B_VOCAB:
        return KNOWN_LLAMA31_8B
    return frozenset()


@dataclass(frozen=True)
class Blacklist:
    """Universal neurons of one model.

    Attributes:
        neurons: detected (layer, neuron) → count, the number of prompts in whose per-layer
            top-k |activation| (last position) the neuron is; every count >= `min_count`.
        n_prompts: prompts used for detection.
        top_k: neurons kept per layer and prompt.
        threshold_fraction: share of prompts a neuron must be in the top-k of.
        stability: split-half reproducibility of the detected list, in [0, 1]. The prompts
            are split into the first ⌊n/2⌋ (half A) and the rest (half B); detection is rerun
            on each half alone with the same `top_k` and `threshold_fraction` (threshold
            ⌈fraction · half size⌉), giving lists D_A and D_B. Then
            ``stability = |D_A ∩ D_B| / |neurons|``: the share of the full list that both
            disjoint halves find independently. D_A ∩ D_B is always a subset of the full list
            (⌈f·a⌉ + ⌈f·b⌉ >= ⌈f·(a+b)⌉), so the value is in [0, 1]. None when a half has
            fewer than 2 prompts or nothing was detected.
        known: known universal neurons added for this model's shape (`known_neurons_for`),
            sorted; not counted.
        n_layers, d_mlp: the shape of the model the list was made for (`check_shape`).
    """

    neurons: dict[Pair, int]
    n_prompts: int
    top_k: int
    threshold_fraction: float
    stability: float | None
    known: list[Pair] = field(default_factory=list)
    n_layers: int = 0
    d_mlp: int = 0

    @property
    def min_count(self) -> int:
        """The count a neuron needed to be detected (`required_count`)."""
        return required_count(self.threshold_fraction, self.n_prompts)

    def pairs(self) -> set[Pair]:
        """Every blacklisted (layer, neuron): detected ∪ known."""
        return set(self.neurons) | set(self.known)

    def check_shape(self, dims: _Shape) -> None:
        """ConfigError when `dims` (a `ModelDims`) is not the shape this list was made for."""
        mine = (self.n_layers, self.d_mlp)
        theirs = (int(dims.n_layers), int(dims.d_mlp))
        if mine != theirs:
            raise ConfigError(
                f"the blacklist was made for a model with n_layers={mine[0]}, d_mlp={mine[1]} "
                f"but this model has n_layers={theirs[0]}, d_mlp={theirs[1]}; run the "
                "'blacklist' rule for this model (data/blacklists/{model}.json)"
            )

    # -------------------------------------------------------------------- JSON
    def to_file(self) -> BlacklistFile:
        return BlacklistFile.build(
            neurons={f"{ly},{n}": c for (ly, n), c in sorted(self.neurons.items())},
            n_prompts=self.n_prompts,
            top_k=self.top_k,
            threshold_fraction=self.threshold_fraction,
            min_count=self.min_count,
            stability=self.stability,
            known=sorted(self.known),
            n_layers=self.n_layers,
            d_mlp=self.d_mlp,
            n_neurons=len(self.pairs()),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON object; neurons as ``{"layer,neuron": count}``, known as ``[[layer, neuron]]``."""
        return self.to_file().to_json()

    @classmethod
    def from_file(cls, f: BlacklistFile) -> Blacklist:
        return cls(
            neurons={_pair(k): c for k, c in f.neurons.items()},
            n_prompts=f.n_prompts,
            top_k=f.top_k,
            threshold_fraction=f.threshold_fraction,
            stability=f.stability,
            known=sorted(f.known),
            n_layers=f.n_layers,
            d_mlp=f.d_mlp,
        )

    @classmethod
    def from_json(cls, data: Any, source: str = "blacklist") -> Blacklist:
        """Parse and check `to_json` output; ArtifactError naming `source` and the problem."""
        return cls.from_file(BlacklistFile.parse(data, source))

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically (sorted keys: same list, same bytes)."""
        return self.to_file().save(path)

    @classmethod
    def load(cls, path: str | Path) -> Blacklist:
        """Read a saved blacklist; ArtifactError when missing, not JSON, or malformed."""
        return cls.from_file(BlacklistFile.load(path))


Count = Annotated[int, Field(strict=True, ge=1)]


class BlacklistFile(Artifact):
    """The blacklist file `data/blacklists/{model}.json`, as written and read (`Blacklist`
    holds the meaning)."""

    FORMAT = "circuitlab.blacklist/1"
    RULE = "blacklist"

    neurons: dict[str, Annotated[int, Field(strict=True)]]  # "layer,neuron" → count
    n_prompts: Count
    top_k: Count
    threshold_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    min_count: Count
    stability: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None
    known: list[tuple[Annotated[int, Field(strict=True)], Annotated[int, Field(strict=True)]]]
    n_layers: Count
    d_mlp: Count
    n_neurons: Annotated[int, Field(strict=True, ge=0)]

    @model_validator(mode="after")
    def _consistent(self) -> BlacklistFile:
        shape = f"within {self.n_layers} layers × {self.d_mlp} neurons"
        for key, count in self.neurons.items():
            pair = _parse_pair(key.split(","), self.n_layers, self.d_mlp)
            if pair is None or not 1 <= count <= self.n_prompts:
                raise ValueError(
                    f"neuron entry {key!r}: {count!r} — keys must be 'layer,neuron' {shape} and "
                    f"counts in 1..{self.n_prompts}"
                )
        for item in self.known:
            if _parse_pair(list(item), self.n_layers, self.d_mlp) is None:
                raise ValueError(f"known entry {list(item)!r} is not a [layer, neuron] {shape}")
        if self.top_k > self.d_mlp:
            raise ValueError(f"top_k={self.top_k} exceeds d_mlp={self.d_mlp}")
        need = required_count(self.threshold_fraction, self.n_prompts)
        if self.min_count != need:
            raise ValueError(f"min_count={self.min_count} disagrees with threshold and n_prompts")
        if any(c < need for c in self.neurons.values()):
            raise ValueError(f"a neuron's count is below min_count={need}")
        listed = {_pair(k) for k in self.neurons} | set(self.known)
        if self.n_neurons != len(listed):
            raise ValueError(f"n_neurons={self.n_neurons} but the file lists {len(listed)}")
        return self


def _pair(key: str) -> Pair:
    layer, neuron = key.split(",")
    return int(layer), int(neuron)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_pair(parts: Sequence[Any], n_layers: int, d_mlp: int) -> Pair | None:
    """(layer, neuron) from two integer-like parts inside the shape, else None."""
    if len(parts) != 2 or any(isinstance(p, float | bool) for p in parts):
        return None
    try:
        layer, neuron = int(parts[0]), int(parts[1])
    except (TypeError, ValueError):
        return None
    if not (0 <= layer < n_layers and 0 <= neuron < d_mlp):
        return None
    return layer, neuron
