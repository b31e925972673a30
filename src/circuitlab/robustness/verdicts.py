"""Every verdict of the report for one model, read from its metrics files, and how many seeds of
a model agree on each (`circuitlab robustness`; `make robustness`). No torch here.

A verdict is a yes/no (or a name) a reader of the report takes away, with the figure behind it:

- ``accuracy/<task>``: the test accuracy passes `evaluation.min_accuracy` (figure: accuracy);
- ``lrp_beats_random/<task>``: the LRP circuit keeps more of the metric than random neurons of
  its size — the area under its faithfulness curve (mean ablation) exceeds the random circuits'
  (figure: area − random area);
- ``acdc_beats_random/<task>``: the reference edge circuit recovers more logit difference than
  random edge sets of its size, beyond their 95 % interval (figure: recovery);
- ``steering/<name>/<method>/<direction>``: steering beats its matched control within the
  side-effect budget (figure: delta beyond control at the judged multiplier);
- ``caa_vs_circuit/<behaviour>/<direction>``: which method pays the least KL at the matched
  effect (a name, or ``none`` when no effect is reached within the budget; figure: its KL).

`agreement` puts the seeds side by side: per verdict, each seed's value, the majority value,
how many seeds share it, and the spread (mean, standard deviation, min, max) of the figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from circuitlab.acdc.scores import EdgeEvaluation
from circuitlab.compare.artifact import CompareReport
from circuitlab.lrp.metrics import FaithfulnessMetrics
from circuitlab.models.metrics import EvaluationMetrics
from circuitlab.steering.artifact import SteeringSummary

Verdict = dict[str, Any]  # {"value": bool | str | None, "figure": float | None}


def model_verdicts(
    data: Path, model: str, min_accuracy: float, names: Sequence[str] | None = None
) -> dict[str, Verdict]:
    """Every verdict of `model`'s run in `data`, for the tasks and behaviours `names` (default:
    every file there; a file left from a task the config no longer has is not read). Files
    that are absent give no verdict."""

    def _stems(folder: Path) -> list[Path]:
        found = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return [p for p in found if names is None or p.stem in names]

    out: dict[str, Verdict] = {}
    metrics = data / "metrics"
    for path in _stems(metrics / "evaluate_model" / model):
        acc = EvaluationMetrics.load(path).test.accuracy
        out[f"accuracy/{path.stem}"] = {"value": acc >= min_accuracy, "figure": acc}
    for path in _stems(metrics / "lrp_faithfulness" / model):
        curve = FaithfulnessMetrics.load(path).ablations.get("mean")
        if curve is not None and curve.area is not None and curve.random_area is not None:
            margin = curve.area - curve.random_area
            out[f"lrp_beats_random/{path.stem}"] = {"value": margin > 0, "figure": margin}
    for path in _stems(metrics / "acdc_evaluate" / model):
        ev = EdgeEvaluation.load(path)
        method = ev.agreement.reference_method
        scores = ev.methods.get(method or "")
        if scores is None:
            continue
        ref = scores.reference
        rand = ref.random
        if ref.recovery is None or rand.recovery_mean is None:
            continue
        bar = rand.recovery_mean + (rand.recovery_ci or 0.0)
        out[f"acdc_beats_random/{path.stem}"] = {
            "value": ref.recovery > bar,
            "figure": ref.recovery,
        }
    summary = metrics / "steering" / model / "summary.json"
    if summary.exists():
        for row, v in SteeringSummary.load(summary).verdicts.items():
            if names is not None and row.split("/", 1)[0] not in names:
                continue
            for label in ("suppress", "amplify"):
                beats = getattr(v, f"{label}_beats_control")
                if beats is not None:
                    out[f"steering/{row}/{label}"] = {
                        "value": bool(beats),
                        "figure": getattr(v, f"{label}_delta"),
                    }
    for path in _stems(data / "compare" / model):
        for direction, entry in CompareReport.load(path).matched.items():
            best = entry.best
            kl = entry.methods[best].kl if best is not None else None
            # "none": no method reaches an effect within the budget (a value, not a gap)
            out[f"caa_vs_circuit/{path.stem}/{direction}"] = {"value": best or "none", "figure": kl}
    return out


def _spread(figures: Sequence[float]) -> dict[str, float | None]:
    if not figures:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {
        "mean": statistics.fmean(figures),
        "sd": statistics.stdev(figures) if len(figures) > 1 else None,
        "min": min(figures),
        "max": max(figures),
    }


def agreement(per_seed: Mapping[int, Mapping[str, Verdict]]) -> dict[str, Any]:
    """Per verdict across seeds: each seed's value and figure, the majority value, how many
    seeds agree with it and the figure's spread; `robust` when every seed has the verdict and
    gives the same value. A verdict a seed lacks (its run stopped, e.g. at the accuracy gate)
    counts as a disagreement."""
    seeds = sorted(per_seed)
    keys = sorted({k for v in per_seed.values() for k in v})
    verdicts: dict[str, Any] = {}
    for key in keys:
        values = {str(s): per_seed[s].get(key, {}).get("value") for s in seeds}
        present = [v for s, v in values.items() if key in per_seed[int(s)]]
        counts: dict[str, int] = {}
        for v in present:
            counts[repr(v)] = counts.get(repr(v), 0) + 1
        majority_repr = max(counts, key=lambda r: (counts[r], r)) if counts else None
        majority = next((v for v in present if repr(v) == majority_repr), None)
        agree = counts.get(majority_repr, 0) if majority_repr is not None else 0
        figures = [
            float(per_seed[s][key]["figure"])
            for s in seeds
            if key in per_seed[s] and per_seed[s][key].get("figure") is not None
        ]
        verdicts[key] = {
            "values": values,
            "figures": {str(s): per_seed[s].get(key, {}).get("figure") for s in seeds},
            "majority": majority,
            "agree": agree,
            "robust": agree == len(seeds),
            "spread": _spread(figures),
        }
    return {
        "seeds": seeds,
        "n_verdicts": len(verdicts),
        "n_robust": sum(v["robust"] for v in verdicts.values()),
        "verdicts": verdicts,
    }
