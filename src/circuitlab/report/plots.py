"""Figures written next to the metrics (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from circuitlab.io import atomic_path


def _save(fig: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def faithfulness_curves(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Faithfulness (keep only the circuit) against circuit size: circuit vs matched random
    neurons (mean and 95 % interval over seeds), one panel per ablation."""
    ablations = report["ablations"]
    fig, axes = plt.subplots(1, len(ablations), figsize=(5 * len(ablations), 3.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], ablations.items(), strict=True):
        rows = sorted(res["curve"].values(), key=lambda r: r["size"])
        x = [100 * r["size"] for r in rows]
        y = [r["faithfulness"] for r in rows]
        ry = [r["random_faithfulness"] for r in rows]
        ci = [r["random_faithfulness_ci"] or 0.0 for r in rows]
        ax.plot(x, y, "o-", label=f"LRP circuit (area {res['area']:.2f})")
        ax.plot(
            x, ry, "s--", color="grey", label=f"random, matched (area {res['random_area']:.2f})"
        )
        ax.fill_between(
            x, [a - b for a, b in zip(ry, ci, strict=True)], [a + b for a, b in zip(ry, ci, strict=True)],
            color="grey", alpha=0.25, linewidth=0,
        )  # fmt: skip
        ax.axhline(report.get("target_faithfulness", 0.8), color="tab:red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("circuit size (% of analysed neurons)")
        ax.set_ylabel("faithfulness (metric recovered)")
        ax.set_title(f"{name} ablation")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def neurons_per_layer(counts: Mapping[int | str, int], path: str | Path, title: str) -> None:
    """Bar chart of circuit neurons per layer."""
    layers = sorted(int(k) for k in counts)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(layers) + 2), 3))
    ax.bar(layers, [counts.get(layer, counts.get(str(layer), 0)) for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("circuit neurons")
    ax.set_xticks(layers)
    ax.set_title(title)
    _save(fig, path)


def acdc_faithfulness(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Edge circuits: logit-difference recovery and KL to clean against circuit size, one line
    per method, with the random equal-size control (mean ± 95 % interval) as a grey band."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
    randoms: dict[int, Mapping[str, Any]] = {}
    for method, res in report["methods"].items():
        rows = sorted(res["circuits"].values(), key=lambda r: r["n_edges"])
        x = [max(r["n_edges"], 1) for r in rows]
        for ax, key in zip(axes[0], ("recovery", "kl"), strict=True):
            y = [r[key] if r[key] is not None else float("nan") for r in rows]
            ax.plot(x, y, "o-" if len(rows) > 1 else "o", label=method)
        randoms.update({max(r["n_edges"], 1): r["random"] for r in rows})
    xs = sorted(randoms)
    for ax, key in zip(axes[0], ("recovery", "kl"), strict=True):
        mean = [randoms[n][f"{key}_mean"] for n in xs]
        ci = [randoms[n][f"{key}_ci"] for n in xs]
        if xs and all(v is not None for v in mean):
            half = [c if c is not None and c == c else 0.0 for c in ci]
            ax.plot(xs, mean, "--", color="grey", label="random, equal size")
            ax.fill_between(
                xs, [m - h for m, h in zip(mean, half, strict=True)],
                [m + h for m, h in zip(mean, half, strict=True)],
                color="grey", alpha=0.25, linewidth=0,
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(f"circuit size (edges of {report['n_edges']})")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("logit-difference recovery")
    axes[0][0].axhline(1.0, color="tab:red", lw=0.8, ls=":")
    axes[0][1].set_ylabel("KL(clean ‖ circuit)")
    fig.suptitle(title)
    _save(fig, path)
