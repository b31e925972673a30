"""The neuron-circuit artifact `data/circuits/{model}/{task}/{method}.json`.

The `neurons` map uses the seed's format — `"layer,position,neuron"` → attribution — and the
seed's `prompt`, `target_token` and `total_logit_diff` keys are present too, so a circuit
written here loads with the seed's `Circuit.load`. Positions are end-relative offsets (−1 is
each prompt's last token; see `circuitlab.lrp.attribution`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator

from circuitlab.artifact import Artifact
from circuitlab.types import NeuronKey


@dataclass(frozen=True)
class NeuronCircuit:
    neurons: dict[NeuronKey, float]
    model: str
    task: str
    method: str  # "lrp" or "contrastive"
    params: dict[str, Any] = field(default_factory=dict)
    metric_value: float = 0.0  # mean metric over the discovery prompts
    n_prompts: int = 0
    n_layers: int = 0
    d_mlp: int = 0

    def __len__(self) -> int:
        return len(self.neurons)

    def per_layer(self) -> dict[int, int]:
        """Number of circuit neurons in each layer (all layers listed)."""
        counts = Counter(layer for layer, _, _ in self.neurons)
        return {layer: counts.get(layer, 0) for layer in range(self.n_layers)}

    def top(self, k: int) -> list[tuple[NeuronKey, float]]:
        return sorted(self.neurons.items(), key=lambda kv: -abs(kv[1]))[:k]

    def to_file(self) -> NeuronCircuitFile:
        return NeuronCircuitFile.build(
            model=self.model,
            task=self.task,
            method=self.method,
            params=self.params,
            metric_value=self.metric_value,
            n_prompts=self.n_prompts,
            n_layers=self.n_layers,
            d_mlp=self.d_mlp,
            n_neurons=len(self.neurons),
            neurons={f"{ly},{p},{n}": v for (ly, p, n), v in sorted(self.neurons.items())},
            # the seed's Circuit fields
            prompt=f"[{self.n_prompts} prompts of {self.task}, method={self.method}]",
            target_token=f"[{self.task}]",
            total_logit_diff=self.metric_value,
        )

    def to_json(self) -> dict[str, Any]:
        return self.to_file().to_json()

    def save(self, path: str | Path) -> None:
        self.to_file().save(path)

    @classmethod
    def from_file(cls, f: NeuronCircuitFile) -> NeuronCircuit:
        return cls(
            neurons={key: f.neurons[text] for key, text in f.keys().items()},
            model=f.model,
            task=f.task,
            method=f.method,
            params=dict(f.params),
            metric_value=f.metric_value,
            n_prompts=f.n_prompts,
            n_layers=f.n_layers,
            d_mlp=f.d_mlp,
        )

    @classmethod
    def from_json(cls, data: Any, source: str = "circuit") -> NeuronCircuit:
        return cls.from_file(NeuronCircuitFile.parse(data, source, _rule(source)))

    @classmethod
    def load(cls, path: str | Path) -> NeuronCircuit:
        return cls.from_file(NeuronCircuitFile.load(path, _rule(path)))


def _rule(path: str | Path) -> str:
    """The rule that writes a neuron circuit file: by its name (`contrastive.json`)."""
    return "contrastive_circuit" if Path(path).stem == "contrastive" else "lrp_circuit"


class NeuronCircuitFile(Artifact):
    """The file of a neuron circuit, as written and read. Keys ``"layer,position,neuron"``."""

    FORMAT = "circuitlab.neuron_circuit/1"
    RULE = "lrp_circuit"

    model: str
    task: str
    method: str
    params: dict[str, Any]
    metric_value: float
    n_prompts: int
    n_layers: int
    d_mlp: int
    n_neurons: int
    neurons: dict[str, float]
    prompt: str
    target_token: str
    total_logit_diff: float

    @field_validator("neurons")
    @classmethod
    def _keys(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if _parse_key(k) is None]
        if bad:
            raise ValueError(
                "neuron keys must be 'layer,position,neuron' integers; bad: "
                + ", ".join(map(repr, bad[:5]))
            )
        return v

    @model_validator(mode="after")
    def _count(self) -> NeuronCircuitFile:
        if self.n_neurons != len(self.neurons):
            raise ValueError(f"n_neurons={self.n_neurons} but {len(self.neurons)} neurons listed")
        return self

    def keys(self) -> dict[NeuronKey, str]:
        """Each neuron's key as (layer, position, neuron) → its text in the file."""
        return {_parse_key(k): k for k in self.neurons}  # type: ignore[misc]


def _parse_key(text: str) -> NeuronKey | None:
    try:
        ly, p, n = (int(x) for x in str(text).split(","))
    except (ValueError, TypeError):
        return None
    return (ly, p, n)
