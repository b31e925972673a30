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

from circuitlab.errors import ArtifactError
from circuitlab.io import read_json, write_json
from circuitlab.types import NeuronKey

FORMAT = "circuitlab.neuron_circuit/1"


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

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "params": self.params,
            "metric_value": self.metric_value,
            "n_prompts": self.n_prompts,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "n_neurons": len(self.neurons),
            "neurons": {f"{ly},{p},{n}": v for (ly, p, n), v in sorted(self.neurons.items())},
            # the seed's Circuit fields
            "prompt": f"[{self.n_prompts} prompts of {self.task}, method={self.method}]",
            "target_token": f"[{self.task}]",
            "total_logit_diff": self.metric_value,
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, source: str = "circuit") -> NeuronCircuit:
        if not isinstance(data, dict) or not isinstance(data.get("neurons"), dict):
            raise ArtifactError(f"{source}: not a neuron circuit (no 'neurons' mapping)")
        neurons: dict[NeuronKey, float] = {}
        bad = []
        for key, value in data["neurons"].items():
            parts = str(key).split(",")
            try:
                ly, p, n = (int(x) for x in parts)
                neurons[(ly, p, n)] = float(value)
            except (ValueError, TypeError):
                bad.append(key)
        if bad:
            raise ArtifactError(
                f"{source}: neuron keys must be 'layer,position,neuron' integers with a numeric "
                f"value; bad: {', '.join(map(repr, bad[:5]))}"
            )
        try:
            return cls(
                neurons=neurons,
                model=str(data.get("model", "")),
                task=str(data.get("task", "")),
                method=str(data.get("method", "lrp")),
                params=dict(data.get("params", {})),
                metric_value=float(data.get("metric_value", data.get("total_logit_diff", 0.0))),
                n_prompts=int(data.get("n_prompts", 0)),
                n_layers=int(data.get("n_layers", 0)),
                d_mlp=int(data.get("d_mlp", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: malformed circuit fields ({exc})") from exc

    @classmethod
    def load(cls, path: str | Path) -> NeuronCircuit:
        return cls.from_json(read_json(path), str(path))
