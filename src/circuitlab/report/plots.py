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
