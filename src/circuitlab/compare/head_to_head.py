"""Which steers better per unit of side effect? Circuit-neuron steering, CAA and the
circuit-rebuilt vector swept over multipliers beside a random control — measured by the steering
evaluation's engine (`circuitlab.steering.evaluate.run_once`), so the comparison and the steering
reports read the same per-prompt numbers with the same bootstrap intervals and the same side
effect, KL(steered ‖ unsteered) — then each method's KL at a matched effect."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models.loading import LoadedModel
from circuitlab.stats import bootstrap_ci
from circuitlab.steering.evaluate import EvalSet, Neutral, Steerer, run_once
from circuitlab.steering.neurons import NeuronSet


@dataclass(frozen=True)
class Probe:
    """What a steering method is measured on: the behaviour's prompts as the steering evaluation
    runs them (`circuitlab.steering.evaluate`), the sign that turns each row's logit difference
    (target − counterfactual) into behaviour answer − contrast answer (+1 on the behaviour's
    own rows, −1 on its contrast rows), and the neutral prompts the side effect is read from."""

    prompts: EvalSet
    sign: np.ndarray  # [n] +1.0 / -1.0
    neutral: Neutral

    @property
    def is_positive(self) -> np.ndarray:
        return self.sign > 0

    def __len__(self) -> int:
        return len(self.prompts)


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
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Effect and side effect of one method at each multiplier, measured by the steering
    evaluation's own per-prompt runs (`run_once`; the unsteered run once).

    Effect = change of the logit difference behaviour answer − contrast answer, on all prompts
    (`effect`), on the behaviour prompts (`effect_positive`) and on the contrast prompts
    (`effect_negative`); side effect = KL(steered ‖ unsteered) of the next token on the neutral
    prompts. Each is a mean with its percentile bootstrap interval over prompts (`…_lo`,
    `…_hi`), the same interval the steering reports give.
    """
    groups = {"effect": slice(None), "effect_positive": probe.is_positive,
              "effect_negative": ~probe.is_positive}  # fmt: skip

    def ci(x: np.ndarray) -> dict[str, float] | None:
        return bootstrap_ci(x, resamples=resamples, seed=seed, level=level) if len(x) else None

    with torch.no_grad():
        base, reference = run_once(lm, probe.prompts, (), probe.neutral, None, None)
        base_ld = base["logit_diff"] * probe.sign
        points = []
        for m in multipliers:
            with steer(float(m)):
                run, _ = run_once(lm, probe.prompts, (), probe.neutral, reference, None)
            ld = run["logit_diff"] * probe.sign
            point: dict[str, Any] = {"multiplier": float(m)}
            delta = ld - base_ld
            measured = {"kl": run["kl_neutral"], **{k: delta[sel] for k, sel in groups.items()}}
            for key, values in measured.items():
                cell = ci(values)
                point[key] = cell["mean"] if cell else None
                point[f"{key}_lo"] = cell["lo"] if cell else None
                point[f"{key}_hi"] = cell["hi"] if cell else None
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


def within_budget(points: Sequence[Mapping[str, Any]], max_kl: float | None) -> list[Any]:
    """The points of one side of a sweep (ordered away from the unsteered multiplier) up to the
    first whose mean KL exceeds `max_kl`: a method is compared only where its side effect fits
    the budget (None: every point)."""
    if max_kl is None:
        return list(points)
    kept = []
    for p in points:
        kl = p["kl"]
        if kl is None or not math.isfinite(float(kl)) or float(kl) > max_kl:
            break  # an unmeasured or infinite side effect is never within a budget
        kept.append(p)
    return kept


def matched_effect(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    neutral: Mapping[str, float],
    directions: Mapping[str, tuple[str, int]] = DIRECTIONS,
    *,
    max_kl: float | None = None,
) -> dict[str, Any]:
    """Per direction (`increase`: more behaviour on the contrast prompts, `decrease`: less on
    the behaviour prompts): the largest |effect| every method reaches that way within the KL
    budget `max_kl` (points beyond it are not used), each method's KL there (linear
    interpolation along its sweep, walking away from the unsteered multiplier on the side that
    goes furthest) and its effect per unit KL; `best` has the smallest KL."""
    out: dict[str, Any] = {}
    for name, (key, sign) in directions.items():
        sides = {}
        for method, points in curves.items():
            by_side = [
                [
                    p
                    for p in within_budget(_direction(points, neutral[method], s), max_kl)
                    if _num(p[key]) * sign > 0
                ]
                for s in (1, -1)
            ]
            sides[method] = max(by_side, key=lambda ps: max((abs(p[key]) for p in ps), default=0))
        reach = {m: max((abs(p[key]) for p in ps), default=0.0) for m, ps in sides.items()}
        target = min(reach.values()) if reach else 0.0
        entry: dict[str, Any] = {
            "measured_on": key,
            "effect": target if target > 0 else None,
            "max_kl": max_kl,
        }
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
    lm: LoadedModel,
    circuit: NeuronCircuit,
    positions: str,
    *,
    random_seed: int | None = None,
    sets: Mapping[str, NeuronSet] | None = None,
) -> Steerer:
    """Multiply the circuit's neurons by m — with `sets`, the neurons the steering stage scales
    in each direction (``sets["amplify"]`` above 1, ``sets["suppress"]`` below:
    `circuitlab.steering.stages.neuron_sets`), so both stages steer a circuit alike; with
    `random_seed`, a random control instead: as many other neurons per layer (and position)
    as the steered set has there, drawn outside the whole circuit."""
    from circuitlab.steering.neurons import NeuronSet
    from circuitlab.steering.stages import steer_set

    full = NeuronSet.from_circuit(circuit)
    by_direction = dict(sets) if sets is not None else {"amplify": full, "suppress": full}
    if random_seed is not None:
        avoid = full.pairs()
        by_direction = {
            k: v.random_matched(lm.dims, random_seed, avoid=avoid) for k, v in by_direction.items()
        }

    def steer(m: float) -> AbstractContextManager[Any]:
        return steer_set(lm, by_direction["amplify" if m > 1 else "suppress"], m, positions)

    return steer


def pick_caa_layer(
    lm: LoadedModel, vector: Tensor, probe: Probe, positions: str
) -> tuple[int, dict[str, float]]:
    """The layer whose vector, added with multiplier 1, moves the behaviour most (on `probe`,
    which should be train prompts: layer choice is a fit, report on the test split)."""
    effects = {}
    for layer in range(lm.dims.n_layers):
        pts = sweep_method(lm, caa_steer(lm, layer, vector[layer], positions), [1.0], probe)
        effects[str(layer)] = pts[0]["effect"]
    best = max(effects, key=lambda k: (effects[k], -int(k)))
    return int(best), effects
