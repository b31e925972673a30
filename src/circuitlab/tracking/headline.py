"""Each stage's headline: the few results a researcher scans in `dvc metrics show`.

A stage's metrics JSON (``data/metrics/<rule>/…``) holds everything it measured — curves, per-τ
tables, per-method blocks, the provenance record — and is what the report and RESULTS.md read.
Shown by DVC it is unreadable (the default run's metrics folder printed 3 MB in 80 lines, the
widest 39,449 characters). So `log_metrics` also writes the stage's *summary*: the values named
here, flat, under the same path with ``metrics`` replaced by ``summary``
(``data/summary/<rule>/…``), which is what dvc.yaml lists as DVC's metrics; the full files stay
one `dvc metrics show data/metrics/<rule>` away.

`HEADLINES` maps a stage to ``{column: path}``: a dotted path into the stage's metrics; a ``*``
segment matches every key there and ``{}`` in the column name takes the matched key (e.g. one
column per edge-discovery method). A path a file does not have is left out of its summary (a
CAA steering report has no neuron circuit, say); `tests/integration/test_pipeline.py`
(`test_dvc_metrics_show_fits_a_terminal`) checks that every path is found in the tiny
pipeline's files and that each stage folder prints within 250 characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUMMARY_DIR = "summary"
METRICS_DIR = "metrics"

HEADLINES: dict[str, dict[str, str]] = {
    "datasets": {"rows": "n_rows", "train": "n_train", "test": "n_test"},
    "check_dataset": {"kept": "n_kept", "dropped": "n_dropped"},
    "train_toy_model": {"final_loss": "final_loss", "parameters": "n_parameters"},
    "evaluate_model": {
        "test_accuracy": "test.accuracy",
        "test_logit_diff": "test.logit_diff",
        "train_accuracy": "train.accuracy",
    },
    "blacklist": {"detected": "n_detected", "known": "n_known", "prompts": "n_prompts"},
    "lrp_attribution": {"prompts": "n_prompts", "positions": "n_positions"},
    "lrp_circuit": {"neurons": "n_neurons", "attribution_share": "share_of_total_attribution"},
    "lrp_faithfulness": {
        "area_mean": "ablations.mean.area",
        "random_area_mean": "ablations.mean.random_area",
        "area_zero": "ablations.zero.area",
        "rho_grad_x_act": "calibration.grad_x_act",
        "rho_lrp_full": "calibration.lrp_full",
    },
    "contrastive_circuit": {"neurons": "n_neurons", "prompts": "n_prompts"},
    "acdc_circuit": {"graph_edges": "n_edges", "forward_passes": "n_forward"},
    "acdc_evaluate": {"{}_recovery": "methods.*.reference.recovery"},
    "steering": {
        "suppress_delta": "summary.suppress.delta.mean",
        "suppress_beats": "summary.suppress.beats_control",
        "suppress_at": "summary.suppress.multiplier",
        "amplify_delta": "summary.amplify.delta.mean",
        "amplify_beats": "summary.amplify.beats_control",
        "amplify_at": "summary.amplify.multiplier",
    },
    "caa_steering": {
        "chosen_delta": "summary.chosen.delta.mean",
        "chosen_beats": "summary.chosen.beats_control",
        "amplify_delta": "summary.amplify.delta.mean",
        "amplify_beats": "summary.amplify.beats_control",
    },
    "steering_summary": {
        "reports": "n_reports",
        "suppress_beat": "counts.suppress.beat",
        "amplify_beat": "counts.amplify.beat",
        "amplify_no_budget": "counts.amplify.no_budget",
    },
    "caa": {
        "layer": "layer",
        "multiplier": "multiplier",
        "kl_neutral": "validation_kl_neutral",
        "in_budget": "within_budget",
    },
    "robustness": {"verdicts": "n_verdicts", "on_every_seed": "n_robust"},
    "compare": {
        "best_decrease": "matched.decrease.best",
        "effect_decrease": "matched.decrease.effect",
        "best_increase": "matched.increase.best",
        "effect_increase": "matched.increase.effect",
    },
}


def summary_path(metrics: str | Path) -> Path | None:
    """Where the summary of the metrics file `metrics` goes: its path with the first
    ``metrics`` folder replaced by ``summary`` (None when the path has no such folder: a
    metrics file written outside the pipeline's layout has no summary)."""
    parts = Path(metrics).parts
    if METRICS_DIR not in parts[:-1]:
        return None
    i = parts.index(METRICS_DIR)
    return Path(*parts[:i], SUMMARY_DIR, *parts[i + 1 :])


def _find(value: Any, keys: list[str], bound: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    if not keys:
        return [] if isinstance(value, (dict, list)) else [(bound, value)]
    if not isinstance(value, Mapping):
        return []
    head, rest = keys[0], keys[1:]
    if head == "*":
        return [m for k, v in value.items() for m in _find(v, rest, (*bound, str(k)))]
    return _find(value[head], rest, bound) if head in value else []


def headline(stage: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's headline values found in `metrics` (column → value, in `HEADLINES` order)."""
    out: dict[str, Any] = {}
    for column, path in HEADLINES.get(stage, {}).items():
        for bound, value in _find(metrics, path.split("."), ()):
            out[column.format(*bound)] = value
    return out
