"""Why does amplifying a circuit fail, or work? The candidate reasons of issue 26, one at a time
(`circuitlab diagnose-amplification`; BENCHMARKS.md "Why amplifying a circuit failed").

For one circuit, each *variant* scales a different neuron set by m > 1, beside random neuron
sets matched to it by layer (and position) — the effect beyond control isolates one reason:

- ``all`` / ``all@circuit``: every circuit neuron at every position (the seed's steering) /
  only at the circuit's own end-relative positions: does steering at every position hurt?
- ``supporters`` / ``supporters@circuit``: only the neurons whose gradient × activation
  supports the metric, measured and steered at every position (the pipeline's default) / at
  the circuit's own cells;
- ``supporters@relevance``: only the neurons whose stored attribution (LRP's sign, summed over
  the neuron's cells) supports it, at every position: does the sign matter, and whose sign?

Every control is drawn outside the whole circuit.

The metric is the one amplification must raise and can: the logit difference (target −
counterfactual) for a task; for a behaviour, behaviour answer − contrast answer on the prompts
that lack the behaviour (the behaviour rate on its own prompts is already ~1, with no room).
`norm` measures the normalisation reason for a task: under ``all`` × m, the residual stream's
norm at the last token entering the final norm, and its cosine with the answer direction (the
unembedding difference times the final norm's weight): the logit difference is that norm-free
cosine times a constant, so a circuit that adds more norm than answer lowers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from circuitlab.steering.evaluate import EvalSet, Neutral, run_once
from circuitlab.steering.neurons import NeuronSet, SteeringError, last_logits, steer_neurons
from circuitlab.steering.signs import (
    SignSource,
    polarity_signs,
    sign_agreement,
    split_by_sign,
    stored_scores,
    support_scores,
)

if TYPE_CHECKING:
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.models.loading import LoadedModel
    from circuitlab.steering.neurons import Positions
    from circuitlab.types import TaskRow

VARIANTS = ("all", "all@circuit", "supporters", "supporters@circuit", "supporters@relevance")


def _metric(run: dict[str, np.ndarray], sign: np.ndarray, is_behaviour: bool) -> float:
    ld = run["logit_diff"] * sign
    return float(ld[sign < 0].mean() if is_behaviour else ld.mean())


def _norm_effect(
    lm: LoadedModel, circuit: NeuronCircuit, main: EvalSet, multipliers: Sequence[float]
) -> dict[str, Any]:
    """Residual norm entering the final norm and its cosine with the answer direction, last
    token, mean over prompts, with every circuit neuron × m."""
    adapter = lm.needs_adapter("the norm diagnosis")
    final = adapter.root(lm.model, "final_norm")
    unembed = adapter.root(lm.model, "unembed").weight.detach().float().cpu()
    gain = getattr(final, "weight", None)
    gain = gain.detach().float().cpu() if gain is not None else torch.ones(unembed.shape[1])
    neurons = NeuronSet.from_pairs(NeuronSet.from_circuit(circuit).pairs())
    out: dict[str, Any] = {}
    for m in (1.0, *multipliers):
        norms, cosines = [], []
        for b in main.batches:
            seen: list[torch.Tensor] = []
            handle = final.register_forward_pre_hook(
                lambda _m, a, seen=seen: seen.append(a[0].detach())
            )
            try:
                with torch.no_grad(), steer_neurons(lm, neurons, m):
                    last_logits(lm, b.input_ids, b.attention_mask, b.last)
            finally:
                handle.remove()
            x = seen[0][torch.arange(len(b)), b.last.to(seen[0].device)].float().cpu()
            direction = (unembed[b.target.cpu()] - unembed[b.counterfactual.cpu()]) * gain
            norms.append(x.norm(dim=-1))
            cosines.append(torch.nn.functional.cosine_similarity(x, direction, dim=-1))
        out[f"m={m:g}"] = {
            "resid_norm": float(torch.cat(norms).mean()),
            "cos_answer": float(torch.cat(cosines).mean()),
        }
    return out


def amplification_diagnosis(
    lm: LoadedModel,
    circuit: NeuronCircuit,
    train: Sequence[TaskRow],
    test: Sequence[TaskRow],
    neutral_prompts: Sequence[str],
    *,
    is_behaviour: bool,
    multipliers: Sequence[float] = (1.5, 2.0, 4.0),
    control_seeds: int = 3,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Each variant's effect beyond its matched control at each multiplier (module doc)."""
    main = EvalSet.build(lm, circuit.task, test, batch_size)
    neutral = Neutral.build(lm, neutral_prompts, batch_size)
    if is_behaviour:
        sign = polarity_signs(main.rows).numpy()
        if not (sign < 0).any():
            raise SteeringError(f"{circuit.task}: no test prompt without the behaviour")
    else:
        sign = np.ones(len(main))
    full = NeuronSet.from_circuit(circuit)

    def supporters(source: SignSource, positions: Positions) -> NeuronSet:
        scores = support_scores(lm, circuit, train, source, positions=positions,
                                behaviour=is_behaviour)  # fmt: skip
        return split_by_sign(scores)[0]

    gradient = support_scores(lm, circuit, train, "gradient", positions="all",
                              behaviour=is_behaviour)  # fmt: skip
    sets: dict[str, tuple[NeuronSet, Positions]] = {
        "all": (NeuronSet.from_pairs(full.pairs()), "all"),
        "all@circuit": (full, "circuit"),
        "supporters": (split_by_sign(gradient)[0], "all"),
        "supporters@circuit": (supporters("gradient", "circuit"), "circuit"),
        "supporters@relevance": (supporters("relevance", "all"), "all"),
    }
    with torch.no_grad():
        base, ref = run_once(lm, main, [], neutral, None, None)
    unsteered = _metric(base, sign, is_behaviour)
    variants: dict[str, Any] = {}
    for name, (ns, positions) in sets.items():
        if not len(ns):
            variants[name] = None
            continue
        avoid = full.pairs()
        controls = [ns.random_matched(lm.dims, seed=s, avoid=avoid) for s in range(control_seeds)]
        cells = {}
        for m in multipliers:
            with torch.no_grad(), steer_neurons(lm, ns, m, positions=positions):
                run, _ = run_once(lm, main, [], neutral, ref, None)
            ctrl = []
            for c in controls:
                with torch.no_grad(), steer_neurons(lm, c, m, positions=positions):
                    ctrl.append(_metric(run_once(lm, main, [], neutral, ref, None)[0], sign,
                                        is_behaviour))  # fmt: skip
            effect = _metric(run, sign, is_behaviour) - unsteered
            control = float(np.mean(ctrl)) - unsteered
            cells[f"m={m:g}"] = {
                "effect": effect,
                "control": control,
                "beyond_control": effect - control,
                "kl_neutral": float(run["kl_neutral"].mean()),
            }
        variants[name] = {"n_neurons": len(ns.pairs()), "multipliers": cells}
    return {
        "task": circuit.task,
        "method": circuit.method,
        "metric": "behaviour − contrast logit difference on the prompts without the behaviour"
        if is_behaviour
        else "logit difference (target − counterfactual)",
        "unsteered": unsteered,
        "n_neurons": len(circuit),
        "sign_agreement": sign_agreement(stored_scores(circuit, "all"), gradient),
        "variants": variants,
        "norm": None if is_behaviour else _norm_effect(lm, circuit, main, multipliers),
    }
