"""Which steers better per unit of side effect? Circuit-neuron steering, CAA and the
circuit-rebuilt vector swept over multipliers beside a random control: the behaviour effect
(t interval over prompts) in each direction and the KL side effect on neutral prompts, then
each method's KL at a matched effect."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from circuitlab.errors import ConfigError
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models.loading import LoadedModel
from circuitlab.stats import kl_divergence
from circuitlab.steering.evaluate import Steerer


@dataclass(frozen=True)
class TextBatch:
    """Right-padded prompts (`circuitlab.prompts.encode_prompts`) and their last positions."""

    input_ids: Tensor
    attention_mask: Tensor
    last: Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def of(cls, tokenizer: Any, prompts: Sequence[str]) -> TextBatch:
        from circuitlab.prompts import encode_prompts

        return cls(*encode_prompts(tokenizer, list(prompts)))


def last_log_probs(lm: LoadedModel, batch: TextBatch, batch_size: int = 32) -> Tensor:
    """`[n, vocab]` log-probabilities at each prompt's last position (CPU float32), under
    whatever steering context is active (the steering hooks see each batch's `last`)."""
    from circuitlab.steering.neurons import last_logits

    out = []
    for start in range(0, len(batch), batch_size):
        sl = slice(start, start + batch_size)
        logits = last_logits(lm, batch.input_ids[sl], batch.attention_mask[sl], batch.last[sl])
        out.append(torch.log_softmax(logits, -1).cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class Probe:
    """What a steering method is measured on: behaviour prompts with their answer tokens, and
    the neutral prompts the side effect is read from."""

    behaviour: TextBatch
    positive: Tensor  # [n] token id of the behaviour's answer (e.g. " Sorry")
    negative: Tensor  # [n] token id of the contrast answer (e.g. " Sure")
    neutral: TextBatch
    is_positive: Tensor  # [n] bool: the prompt shows the behaviour (polarity "positive")


def _t(values: Tensor) -> tuple[float, float]:
    from circuitlab.stats import t_interval

    return t_interval(values.double().tolist())


#: Which prompts each direction is measured on: inducing the behaviour where it is absent
#: (contrast prompts), suppressing it where it is present (behaviour prompts).
DIRECTIONS: dict[str, tuple[str, int]] = {
    "increase": ("effect_negative", 1),
    "decrease": ("effect_positive", -1),
}


def sweep_method(
    lm: LoadedModel,
    steer: Steerer,
    multipliers: Sequence[float],
    probe: Probe,
    *,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Effect and side effect of one method at each multiplier (the unsteered run once).

    Effect = change of the logit difference behaviour answer − contrast answer, on all
    prompts (`effect`), on the behaviour prompts (`effect_positive`) and on the contrast
    prompts (`effect_negative`), each with its 95 % t half-width; side effect = mean
    KL(unsteered ‖ steered) of the next token on the neutral prompts.
    """
    idx = torch.arange(len(probe.behaviour))
    groups = {"effect": slice(None), "effect_positive": probe.is_positive,
              "effect_negative": ~probe.is_positive}  # fmt: skip

    def measure(ctx: AbstractContextManager[Any]) -> tuple[Tensor, Tensor]:
        with ctx:
            lp = last_log_probs(lm, probe.behaviour, batch_size)
            neutral = last_log_probs(lm, probe.neutral, batch_size)
        return lp[idx, probe.positive] - lp[idx, probe.negative], neutral

    base_ld, base_neutral = measure(nullcontext())
    points = []
    for m in multipliers:
        ld, neutral = measure(steer(float(m)))
        delta = ld - base_ld
        kl = kl_divergence(base_neutral, neutral).clamp(min=0.0)
        side, side_ci = _t(kl)
        point: dict[str, Any] = {"multiplier": float(m), "kl": side, "kl_ci": side_ci}
        for key, sel in groups.items():
            part = delta[sel]
            mean, half = _t(part) if len(part) else (float("nan"), float("nan"))
            point[key], point[f"{key}_ci"] = mean, half
        point["logit_diff"] = float(ld.mean())
        points.append(point)
    return points


def _crossing(points: Sequence[Mapping[str, Any]], target: float, key: str) -> float | None:
    """KL where a method's effect first reaches `target` (|effect| increasing away from the
    unsteered point), linearly interpolated; None if it never does."""
    prev_e, prev_k = 0.0, 0.0
    for p in points:
        e, k = abs(p[key]), p["kl"]
        if e >= target:
            if e == prev_e:
                return float(k)
            return float(prev_k + (k - prev_k) * (target - prev_e) / (e - prev_e))
        prev_e, prev_k = e, k
    return None


def _direction(points: Sequence[Mapping[str, Any]], neutral: float, sign: int) -> list[Any]:
    """The sweep's points on one side of the neutral multiplier whose effect has sign `sign`,
    ordered away from the neutral multiplier."""
    side = [p for p in points if (p["multiplier"] - neutral) * sign > 0]
    side.sort(key=lambda p: abs(p["multiplier"] - neutral))
    return side


def matched_effect(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    neutral: Mapping[str, float],
    directions: Mapping[str, tuple[str, int]] = DIRECTIONS,
) -> dict[str, Any]:
    """Per direction (`increase`: more behaviour on the contrast prompts, `decrease`: less on
    the behaviour prompts): the largest |effect| every method reaches that way, each method's
    KL there (linear interpolation along its sweep, walking away from the unsteered multiplier
    on the side that goes furthest) and its effect per unit KL; `best` has the smallest KL."""
    out: dict[str, Any] = {}
    for name, (key, sign) in directions.items():
        sides = {}
        for method, points in curves.items():
            by_side = [
                [p for p in _direction(points, neutral[method], s) if _num(p[key]) * sign > 0]
                for s in (1, -1)
            ]
            sides[method] = max(by_side, key=lambda ps: max((abs(p[key]) for p in ps), default=0))
        reach = {m: max((abs(p[key]) for p in ps), default=0.0) for m, ps in sides.items()}
        target = min(reach.values()) if reach else 0.0
        entry: dict[str, Any] = {"measured_on": key, "effect": target if target > 0 else None}
        entry["methods"] = {}
        for method, ps in sides.items():
            kl = _crossing(ps, target, key) if target > 0 else None
            entry["methods"][method] = {
                "max_effect": reach[method],
                "kl": kl,
                "effect_per_kl": (target / kl) if kl and kl > 0 else None,
            }
        ranked = [(v["kl"], m) for m, v in entry["methods"].items() if v["kl"] is not None]
        entry["best"] = min(ranked)[1] if ranked else None
        out[name] = entry
    return out


def _num(x: Any) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else 0.0


def caa_steer(lm: LoadedModel, layer: int, vector: Tensor, positions: str) -> Steerer:
    from circuitlab.steering.caa import add_vector

    def steer(m: float) -> AbstractContextManager[Any]:
        return add_vector(lm, layer, vector, m, positions=positions)  # type: ignore[arg-type]

    return steer


def multi_layer_steer(
    lm: LoadedModel, vectors: Tensor, layers: Sequence[int], positions: str
) -> Steerer:
    """Add `vectors[l]` at every layer of `layers` at once (the circuit-rebuilt vector)."""
    from circuitlab.steering.caa import add_vector

    @contextmanager
    def steer(m: float) -> Iterator[None]:
        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(
                    add_vector(lm, layer, vectors[layer], m, positions=positions)  # type: ignore[arg-type]
                )
            yield

    return steer


def neuron_steer(
    lm: LoadedModel, circuit: NeuronCircuit, positions: str, *, random_seed: int | None = None
) -> Steerer:
    """Multiply the circuit's neurons by m; with `random_seed`, a random control instead: as
    many other neurons per layer (and position) as the circuit has there."""
    from circuitlab.steering.neurons import NeuronSet, steer_neurons

    neurons = NeuronSet.from_circuit(circuit)
    if random_seed is not None:
        neurons = neurons.random_matched(lm.dims, random_seed)

    def steer(m: float) -> AbstractContextManager[Any]:
        return steer_neurons(lm, neurons, m, positions=positions)  # type: ignore[arg-type]

    return steer


def pick_caa_layer(
    lm: LoadedModel, vector: Tensor, probe: Probe, positions: str, batch_size: int = 32
) -> tuple[int, dict[str, float]]:
    """The layer whose vector, added with multiplier 1, moves the behaviour most (on `probe`,
    which should be train prompts: layer choice is a fit, report on the test split)."""
    effects = {}
    for layer in range(lm.dims.n_layers):
        pts = sweep_method(
            lm, caa_steer(lm, layer, vector[layer], positions), [1.0], probe, batch_size=batch_size
        )
        effects[str(layer)] = pts[0]["effect"]
    best = max(effects, key=lambda k: (effects[k], -int(k)))
    return int(best), effects


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def check_multipliers(values: Sequence[Any], what: str) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: multiplier {v!r} is not a number") from None
        if not math.isfinite(f):
            raise ConfigError(f"{what}: multiplier {v!r} is not finite")
        out.append(f)
    return out
