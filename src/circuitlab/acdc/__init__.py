"""Edge-level circuit discovery: the computational graph, an own patch layer, and the
algorithms on top of it (sequential ACDC, edge attribution patching, greedy head pruning).

Typical use::

    pm = patchable(load_model(path))                       # ModelError if unsupported
    ctx = prepare_rows(pm, rows, ablation="resample")      # clean (+ corrupt) run, cached
    result = sequential_acdc(ctx, ACDCConfig(faithfulness="kl"))
    write_json(out, result.to_json())

Building blocks for faster variants:

* `Graph` (`pm.graph`): sources, destinations, edges ``"{src}->{dst}"`` in a documented
  storage order; a flat ``[n_edges]`` mask in that order is what every function takes;
  `acdc_order` is sequential ACDC's visiting order.
* `forward(ctx, mask, start_layer=l, all_positions=False)`: logits with the masked edges
  patched; ``mask`` may be ``[E, n_edges]`` (E edge sets in one forward) and may require grad;
  ``start_layer`` resumes at block ``l`` from the clean cache (`PatchContext.clean_src`,
  `PatchContext.clean_resid`).
* `evaluate_masks(ctx, masks, metric)`: one forward, the metric of each of E edge sets.
* `fast_acdc` (exact: the same decisions as `sequential_acdc`, cheaper) and `approx_acdc`
  (window / group-testing approximations, with `decision_agreement`).
* `METRICS`: ``kl``, ``mse``, ``logit_diff``, ``target_logit`` — ``(logits [E, B, V], ctx)
  -> [E]``.

Supported architectures: Llama, Mistral, Qwen2, Gemma (1), GPT-2. Gemma 2/3 are refused
(norms on attention/MLP outputs make head outputs non-additive).
"""

from circuitlab.acdc.approx import ApproxACDCResult, ApproxConfig, approx_acdc, decision_agreement
from circuitlab.acdc.eap import EAPConfig, EAPResult, eap_scores, edge_attribution
from circuitlab.acdc.fast import FastACDCResult, FastConfig, fast_acdc
from circuitlab.acdc.graph import RESID_END, RESID_START, Graph, acdc_order, build_graph
from circuitlab.acdc.heads import HeadPruningConfig, HeadPruningResult, prune_heads
from circuitlab.acdc.metrics import METRICS, get_metric
from circuitlab.acdc.patch import (
    ABLATIONS,
    Ablation,
    PatchContext,
    PatchModel,
    encode_pairs,
    evaluate_masks,
    forward,
    patchable,
    prepare,
    prepare_rows,
)
from circuitlab.acdc.sequential import ACDCConfig, ACDCResult, TauResult, sequential_acdc

__all__ = [
    "ABLATIONS",
    "METRICS",
    "RESID_END",
    "RESID_START",
    "ACDCConfig",
    "ACDCResult",
    "Ablation",
    "ApproxACDCResult",
    "ApproxConfig",
    "EAPConfig",
    "EAPResult",
    "FastACDCResult",
    "FastConfig",
    "Graph",
    "HeadPruningConfig",
    "HeadPruningResult",
    "PatchContext",
    "PatchModel",
    "TauResult",
    "acdc_order",
    "approx_acdc",
    "build_graph",
    "decision_agreement",
    "eap_scores",
    "edge_attribution",
    "encode_pairs",
    "evaluate_masks",
    "fast_acdc",
    "forward",
    "get_metric",
    "patchable",
    "prepare",
    "prepare_rows",
    "prune_heads",
    "sequential_acdc",
]
