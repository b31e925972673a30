"""Edge-level circuit discovery: the computational graph, an own patch layer, and the
algorithms on top of it (sequential ACDC, edge attribution patching, greedy head pruning).

Typical use::

    pm = patchable(load_model(path))                       # ModelError if unsupported
    ctx = prepare_rows(pm, rows, ablation="resample")      # clean (+ corrupt) run, cached
    # or, from token ids: prepare(pm, batch_from_ids(clean, corrupt, answer, wrong_answer))
    result = fast_acdc(ctx, SweepConfig(faithfulness="kl"))
    write_json(out, result.to_json())

The library guide (docs/library.md) walks through every method on a model directory and token
ids.

Building blocks for faster variants:

* `Graph` (`pm.graph`): sources, destinations, edges ``"{src}->{dst}"`` in a documented
  storage order; a flat ``[n_edges]`` mask in that order is what every function takes;
  `acdc_order(graph, edge_order)` is sequential ACDC's visiting order (`EDGE_ORDERS`:
  ``"circuitlab"``, ``"autocircuit"``).
* `forward(ctx, mask, start_layer=l, all_positions=False)`: logits with the masked edges
  patched; ``mask`` may be ``[E, n_edges]`` (E edge sets in one forward) and may require grad;
  ``start_layer`` resumes at block ``l`` from the clean cache (`PatchContext.clean_src`,
  `PatchContext.clean_resid`).
* `evaluate_masks(ctx, masks, metric)`: one forward, the metric of each of E edge sets.
* `edge_methods()`: the registry of edge methods (one file each in `circuitlab.acdc.methods`),
  what the pipeline runs; `circuitlab.acdc.mib` scores any of them on MIB's yardstick.
* `ig_input_scores` / `ig_activation_scores`: MIB's EAP-IG estimators
  (`EAPConfig(ig="inputs" | "activations")`).
* `fast_acdc` (exact: the same decisions as `sequential_acdc`, cheaper) and `approx_acdc`
  (window / group-testing approximations, with `decision_agreement`); exact results carry a
  per-edge `EdgeTrace` per τ (`TauResult.trace`).
* `METRICS`: ``kl``, ``mse``, ``logit_diff``, ``target_logit`` — ``(logits [E, B, V], ctx)
  -> [E]``.

Supported architectures: Llama, Mistral, Qwen2, Gemma (1), GPT-2. Gemma 2/3 are refused
(norms on attention/MLP outputs make head outputs non-additive).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuitlab.lazy import exports

if TYPE_CHECKING:
    from circuitlab.acdc.approx import (
        ApproxACDCResult,
        ApproxConfig,
        approx_acdc,
        decision_agreement,
    )
    from circuitlab.acdc.backend import PatchBackend, patchable
    from circuitlab.acdc.batch import PatchContext, encode_pairs
    from circuitlab.acdc.eap import (
        EAPConfig,
        EAPResult,
        eap_scores,
        edge_attribution,
        ig_activation_scores,
        ig_input_scores,
    )
    from circuitlab.acdc.fast import FastACDCResult, FastConfig, fast_acdc
    from circuitlab.acdc.graph import (
        EDGE_ORDERS,
        RESID_END,
        RESID_START,
        Graph,
        acdc_order,
        build_graph,
    )
    from circuitlab.acdc.heads import HeadPruningConfig, HeadPruningResult, prune_heads
    from circuitlab.acdc.metrics import METRICS, get_metric
    from circuitlab.acdc.patch import (
        ABLATIONS,
        PatchModel,
        evaluate_masks,
        forward,
        prepare,
        prepare_rows,
    )
    from circuitlab.acdc.registry import EdgeMethod, edge_methods, get_method
    from circuitlab.acdc.sequential import ACDCResult, SweepConfig, TauResult, sequential_acdc
    from circuitlab.acdc.trace import EdgeTrace, near_tau
    from circuitlab.types import Ablation

# attribute -> defining module, imported on first use (circuitlab.lazy)
_WHERE = {
    "ApproxACDCResult": "circuitlab.acdc.approx",
    "ApproxConfig": "circuitlab.acdc.approx",
    "approx_acdc": "circuitlab.acdc.approx",
    "decision_agreement": "circuitlab.acdc.approx",
    "EAPConfig": "circuitlab.acdc.eap",
    "EAPResult": "circuitlab.acdc.eap",
    "eap_scores": "circuitlab.acdc.eap",
    "edge_attribution": "circuitlab.acdc.eap",
    "ig_activation_scores": "circuitlab.acdc.eap",
    "ig_input_scores": "circuitlab.acdc.eap",
    "EdgeMethod": "circuitlab.acdc.registry",
    "edge_methods": "circuitlab.acdc.registry",
    "get_method": "circuitlab.acdc.registry",
    "FastACDCResult": "circuitlab.acdc.fast",
    "FastConfig": "circuitlab.acdc.fast",
    "fast_acdc": "circuitlab.acdc.fast",
    "EDGE_ORDERS": "circuitlab.acdc.graph",
    "RESID_END": "circuitlab.acdc.graph",
    "RESID_START": "circuitlab.acdc.graph",
    "Graph": "circuitlab.acdc.graph",
    "acdc_order": "circuitlab.acdc.graph",
    "build_graph": "circuitlab.acdc.graph",
    "HeadPruningConfig": "circuitlab.acdc.heads",
    "HeadPruningResult": "circuitlab.acdc.heads",
    "prune_heads": "circuitlab.acdc.heads",
    "METRICS": "circuitlab.acdc.metrics",
    "get_metric": "circuitlab.acdc.metrics",
    "ABLATIONS": "circuitlab.acdc.patch",
    "Ablation": "circuitlab.types",
    "PatchContext": "circuitlab.acdc.batch",
    "PatchBackend": "circuitlab.acdc.backend",
    "PatchModel": "circuitlab.acdc.patch",
    "encode_pairs": "circuitlab.acdc.batch",
    "evaluate_masks": "circuitlab.acdc.patch",
    "forward": "circuitlab.acdc.patch",
    "patchable": "circuitlab.acdc.backend",
    "prepare": "circuitlab.acdc.patch",
    "prepare_rows": "circuitlab.acdc.patch",
    "SweepConfig": "circuitlab.acdc.sequential",
    "ACDCResult": "circuitlab.acdc.sequential",
    "TauResult": "circuitlab.acdc.sequential",
    "sequential_acdc": "circuitlab.acdc.sequential",
    "EdgeTrace": "circuitlab.acdc.trace",
    "near_tau": "circuitlab.acdc.trace",
}
__all__ = [
    "ABLATIONS",
    "EDGE_ORDERS",
    "METRICS",
    "RESID_END",
    "RESID_START",
    "ACDCResult",
    "Ablation",
    "ApproxACDCResult",
    "ApproxConfig",
    "EAPConfig",
    "EAPResult",
    "EdgeMethod",
    "EdgeTrace",
    "FastACDCResult",
    "FastConfig",
    "Graph",
    "HeadPruningConfig",
    "HeadPruningResult",
    "PatchBackend",
    "PatchContext",
    "PatchModel",
    "SweepConfig",
    "TauResult",
    "acdc_order",
    "approx_acdc",
    "build_graph",
    "decision_agreement",
    "eap_scores",
    "edge_attribution",
    "edge_methods",
    "encode_pairs",
    "evaluate_masks",
    "fast_acdc",
    "forward",
    "get_method",
    "get_metric",
    "ig_activation_scores",
    "ig_input_scores",
    "near_tau",
    "patchable",
    "prepare",
    "prepare_rows",
    "prune_heads",
    "sequential_acdc",
]
__getattr__, __dir__ = exports(__name__, _WHERE)
