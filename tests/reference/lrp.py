"""A straightforward reference for LRP attribution: the seed's algorithm, one prompt at a time.

One unpadded forward + `backward()` per prompt, then a Python loop over positions, layers and
neurons reading every value with `.item()` — exactly how `compute_attribution` in the seed
collects its dict. Used by the tests (fast ≡ reference) and by the benchmark (speed-up).
Keys are `(layer, offset, neuron)` with end-relative offsets, as in `circuitlab.lrp`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitlab.lrp.attribution import AttributionOptions, metric_values
from circuitlab.lrp.rules import linearized
from circuitlab.models.loading import LoadedModel
from circuitlab.prompts import encode_rows
from circuitlab.types import TaskRow

Key = tuple[int, int, int]


def reference_attribution(
    lm: LoadedModel, rows: Sequence[TaskRow], opts: AttributionOptions
) -> tuple[list[dict[Key, float]], list[float]]:
    """Per-prompt attribution dicts and metric values, computed prompt by prompt."""
    model, adapter = lm.model, lm.adapter
    out: list[dict[Key, float]] = []
    metrics: list[float] = []
    for row in rows:
        one = encode_rows([row], lm.tokenizer)
        length = int(one.last[0]) + 1
        ids = one.input_ids[:, :length]
        model.zero_grad(set_to_none=True)
        with (
            torch.enable_grad(),
            linearized(model, adapter, opts.attention_rule, lrp=opts.lrp),
            adapter.capture_neurons(model, detach=False) as acts,
        ):
            logits = model(ids).logits[0, -1].float()
            for a in acts.values():
                a.retain_grad()
            metric = metric_values(logits[None], one.target, one.counterfactual, opts.metric)[0]
            metric.backward()
        start = 1 if opts.filter_bos else 0
        if opts.last_n_positions is not None:
            start = max(0, length - opts.last_n_positions)
        found: dict[Key, float] = {}
        for p in range(start, length):
            for layer in range(len(acts)):
                if layer in opts.skip_layers:
                    continue
                attr = (acts[layer].detach() * acts[layer].grad)[0, p]
                for n in range(attr.shape[0]):
                    if (layer, n) in opts.skip_neurons:
                        continue
                    value = attr[n].item()
                    if value != 0.0:
                        found[(layer, p - length, n)] = value
        out.append(found)
        metrics.append(metric.item())
    model.zero_grad(set_to_none=True)
    return out, metrics
