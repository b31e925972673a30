"""Which circuit neurons support the metric: the sign that sign-aware steering reads.

A circuit stores each neuron's attribution with its sign (`NeuronCircuit.neurons`), but for
steering that sign can mislead. LRP's rules hold the normalisation layers' scale constant, so a
neuron LRP credits with writing towards the answer may, when scaled up, mostly grow the residual
norm that the final RMSNorm divides by — and lower the logit difference. Measured on the default
model (issue 26, BENCHMARKS.md "Why amplifying a circuit failed"): LRP's sign and the gradient's
disagree on 12–71 % of each task's circuit neurons, and amplifying every circuit neuron lowered
the logit difference on three of four tasks while amplifying the gradient's supporters raised it.

`support_scores` gives each circuit neuron a support score from one of two sources:

- ``"gradient"``: gradient × activation of the circuit's metric at the neuron's cell (its layer,
  end-relative position and index), the mean over `rows` — the model's own first-order answer,
  normalisation included (no LRP rules). For a behaviour the metric is the behaviour's own
  direction — behaviour answer − contrast answer on every row — not each row's target −
  counterfactual: a behaviour's negative rows have the contrast answer as their target, so the
  rows' own metric rewards neurons that make the model answer each prompt *as it already does*,
  and amplifying those lowered the behaviour on the prompts that lack it (measured: −1.9 to
  −5.7 logits, BENCHMARKS.md);
- ``"relevance"``: the attribution stored in the circuit (LRP relevance, or the contrastive
  activation difference).

`split_by_sign` turns the scores into supporters (> 0) and opposers (< 0). Support is measured
where steering acts: per circuit cell for ``positions="circuit"``, per neuron over every position
for ``positions="all"`` (the default steering).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from circuitlab.steering.neurons import NeuronSet, SteeringError
from circuitlab.types import NeuronKey

if TYPE_CHECKING:
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.models.loading import LoadedModel
    from circuitlab.steering.neurons import Positions
    from circuitlab.types import TaskRow

SignSource = Literal["gradient", "relevance"]
SIGN_SOURCES: tuple[str, ...] = ("gradient", "relevance")


def stored_scores(
    circuit: NeuronCircuit, positions: Positions = "circuit"
) -> dict[NeuronKey, float]:
    """The circuit's stored attributions as support scores: per cell, or (``positions="all"``)
    summed per neuron over its cells, keyed ``(layer, None, neuron)``."""
    if positions == "circuit":
        return {k: float(v) for k, v in circuit.neurons.items()}
    out: dict[NeuronKey, float] = {}
    for (ly, _, n), v in circuit.neurons.items():
        out[(ly, None, n)] = out.get((ly, None, n), 0.0) + float(v)
    return out


def support_scores(
    lm: LoadedModel,
    circuit: NeuronCircuit,
    rows: Sequence[TaskRow],
    source: SignSource,
    *,
    positions: Positions = "circuit",
    behaviour: bool = False,
    batch_size: int = 32,
) -> dict[NeuronKey, float]:
    """Each circuit neuron's support for the circuit's metric (> 0 supports it), from `source`,
    for steering at `positions`: with ``"circuit"`` one score per circuit cell (its layer,
    end-relative position and neuron); with ``"all"`` one per circuit neuron, keyed
    ``(layer, None, neuron)``, for scaling it at every position — the gradient × activation
    summed over all of a prompt's positions (the first-order effect of that steering), or the
    stored attributions summed over the neuron's cells.

    ``"gradient"`` runs one forward and backward pass per batch of `rows` (the circuit's own
    split, e.g. train), so its memory is that of one batch's attribution; a cell beyond a
    prompt's length scores 0 there. The metric is the circuit's own (`params.metric`); with
    `behaviour` it is the logit difference with each row counted by the sign of its
    ``meta.polarity`` (+ positive, − negative): the support for behaviour answer − contrast
    answer on every row.
    """
    if positions not in ("circuit", "all"):
        raise SteeringError(f"positions must be 'circuit' or 'all', got {positions!r}")
    if source == "relevance":
        return stored_scores(circuit, positions)
    if source != "gradient":
        raise SteeringError(f"unknown sign source {source!r}; choose one of {SIGN_SOURCES}")
    if not rows:
        raise SteeringError(
            f"{circuit.task}: sign source 'gradient' needs the rows the circuit was found on"
        )
    from circuitlab.lrp.attribution import AttributionOptions, attribute_batch
    from circuitlab.prompts import batches, encode_rows

    # a behaviour's direction is behaviour − contrast: only the logit difference flips by row
    metric = "logit_diff" if behaviour else str(circuit.params.get("metric", "logit_diff"))
    opts = AttributionOptions(metric=metric, lrp=False, filter_bos=False, batch_size=batch_size)  # type: ignore[arg-type]
    keys = sorted(stored_scores(circuit, positions), key=lambda k: (k[0], k[1] or 0, k[2]))
    layer = torch.tensor([ly for ly, _, _ in keys])
    neuron = torch.tensor([n for _, _, n in keys])
    if positions == "circuit":
        width = max(1, -min(p for _, p, _ in keys))  # the circuit's oldest end-relative offset
        column = torch.tensor([width + p for _, p, _ in keys])  # type: ignore[operator]
    total = torch.zeros(len(keys), dtype=torch.float64)
    count = 0
    for chunk in batches(list(rows), batch_size):
        batch = encode_rows(chunk, lm.tokenizer)
        if positions == "circuit":
            scores, _, _ = attribute_batch(lm, batch, width, opts)  # [B, L, width, D]
            cells = scores[:, layer, column, neuron].double()
        else:  # every position of every prompt (padding scores 0)
            scores, _, _ = attribute_batch(lm, batch, int(batch.last.max()) + 1, opts)
            cells = scores.sum(2)[:, layer, neuron].double()
        if behaviour:
            cells = cells * polarity_signs(chunk)[:, None]
        total += cells.sum(0)
        count += len(chunk)
    return {k: float(v) for k, v in zip(keys, (total / count).tolist(), strict=True)}


def polarity_signs(rows: Sequence[TaskRow]) -> torch.Tensor:
    """+1 for a behaviour's positive rows, −1 for its negative rows (SteeringError otherwise)."""
    signs = {"positive": 1.0, "negative": -1.0}
    bad = [r.id for r in rows if r.meta.get("polarity") not in signs]
    if bad:
        raise SteeringError(
            f"behaviour rows need meta.polarity 'positive' or 'negative'; rows {bad[:5]} have none"
        )
    return torch.tensor([signs[str(r.meta["polarity"])] for r in rows], dtype=torch.float64)


def split_by_sign(scores: dict[NeuronKey, float]) -> tuple[NeuronSet, NeuronSet]:
    """`(supporters, opposers)`: the keys scoring > 0 and < 0 (a zero score is neither)."""
    return (
        NeuronSet(tuple(sorted(k for k, v in scores.items() if v > 0))),
        NeuronSet(tuple(sorted(k for k, v in scores.items() if v < 0))),
    )


def sign_agreement(stored: dict[NeuronKey, float], scores: dict[NeuronKey, float]) -> float | None:
    """Share of the keys whose stored attribution (`stored_scores`) has the sign of `scores`,
    among those where both are non-zero (None when there are none)."""
    both = [k for k, v in stored.items() if v != 0 and scores.get(k, 0.0) != 0]
    if not both:
        return None
    return sum((stored[k] > 0) == (scores[k] > 0) for k in both) / len(both)
