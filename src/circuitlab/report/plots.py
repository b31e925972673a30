"""The figures the stages write next to their metrics (matplotlib, Agg backend): faithfulness
curves, neurons per layer, edge-circuit evaluation, CAA vs circuit, steering dose-response and
leakage; and the one dose-response drawing (`draw_dose_response`) the report reuses. The
figures drawn for the HTML report itself are in `circuitlab.report.inline`."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from circuitlab.io import atomic_path


def subplots(*args: Any, **kwargs: Any) -> Any:
    """`plt.subplots` with constrained layout: colour bars, tick labels, panel titles and the
    suptitle get their own room instead of overlapping (tests/report/test_plots.py)."""
    return plt.subplots(*args, layout="constrained", **kwargs)


def annotate_cells(ax: Any, im: Any, texts: list[list[str | None]], fontsize: float = 7) -> None:
    """Write ``texts[i][j]`` on heatmap cell (i, j), white on dark cells and black on light
    ones (by the cell colour's luminance), so every number stays readable."""
    data = im.get_array()
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            if text is None:
                continue
            r, g, b, _ = im.cmap(im.norm(data[i, j]))
            dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")  # fmt: skip


def _save(fig: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def faithfulness_curves(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Faithfulness (keep only the circuit) against circuit size: circuit vs matched random
    neurons (mean and 95 % interval over seeds), one panel per ablation."""
    ablations = report["ablations"]
    fig, axes = subplots(1, len(ablations), figsize=(5 * len(ablations), 3.8), squeeze=False)
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
    fig, ax = subplots(figsize=(max(4, 0.35 * len(layers) + 2), 3))
    ax.bar(layers, [counts.get(layer, counts.get(str(layer), 0)) for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("circuit neurons")
    ax.set_xticks(layers)
    ax.set_title(title)
    _save(fig, path)


def acdc_faithfulness(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Edge circuits: logit-difference recovery and KL to clean against circuit size, one line
    per method, with the random equal-size control (mean ± 95 % interval) as a grey band; below
    (when the report has MIB's curves), faithfulness against the share of edges for the signed
    ranking (CPR: area under it) and the |score| ranking (CMD: area between it and 1)."""
    mib = report.get("mib")
    fig, axes = subplots(2 if mib else 1, 2, figsize=(10, 7.8 if mib else 3.8), squeeze=False)
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
    if mib:
        _mib_curves(axes[1], mib)
    fig.suptitle(title)
    _save(fig, path)


def _mib_curves(axes: Any, mib: Mapping[str, Any]) -> None:
    """MIB's faithfulness curves on two panels (signed → CPR, |score| → CMD), random band."""
    keys = sorted(mib["sizes"])
    pct = [mib["sizes"][k]["percent"] for k in keys]
    rand = mib["random"]
    panels = (("signed", "cpr", "CPR"), ("abs", "cmd", "CMD"))
    for ax, (kind, key, name) in zip(axes, panels, strict=True):
        for method, res in mib["methods"].items():
            curve = res[f"faithfulness_{kind}"]
            y = [curve[k] if curve[k] is not None else float("nan") for k in keys]
            area = res[key]
            label = f"{method} ({name} {area:.3f})" if area is not None else method
            ax.plot(pct, y, "o-", ms=3, lw=1.1, label=label)
        mean = [rand["faithfulness_mean"][k] for k in keys]
        ci = [rand["faithfulness_ci"][k] for k in keys]
        if all(v is not None for v in mean):
            half = [c if c is not None and c == c else 0.0 for c in ci]
            area = rand[f"{key}_mean"]
            ax.plot(pct, mean, "--", color="grey", label=f"random ({name} {area:.3f})")
            ax.fill_between(
                pct, [m - h for m, h in zip(mean, half, strict=True)],
                [m + h for m, h in zip(mean, half, strict=True)],
                color="grey", alpha=0.25, linewidth=0,
            )  # fmt: skip
        ax.axhline(1.0, color="tab:red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("edges kept (% of the graph, MIB's sizes)")
        ax.set_ylabel(f"faithfulness ({'signed' if kind == 'signed' else '|score|'} ranking)")
        ax.legend(fontsize=7)


# ------------------------------------------------------------------ CAA vs circuit (compare)
def compare_pareto(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Behaviour effect against side effect (KL on neutral prompts) for every steering method
    over its multiplier sweep, one panel per direction: inducing the behaviour (on the contrast
    prompts) and suppressing it (on the behaviour prompts). The unsteered model is the origin;
    bars are 95 % bootstrap intervals over prompts; the matched-effect level is dotted."""
    panels = (
        ("increase", "effect_negative", "induce: on contrast prompts"),
        ("decrease", "effect_positive", "suppress: on behaviour prompts"),
    )
    fig, axes = subplots(1, 2, figsize=(12, 4.6), squeeze=False)
    for ax, (direction, key, label) in zip(axes[0], panels, strict=True):
        for method, points in report["sweep"].items():
            neutral = report["neutral_multiplier"][method]
            pts = sorted(
                [*points.values(), {"multiplier": neutral, "kl": 0.0, key: 0.0}],
                key=lambda p: p["multiplier"],
            )
            ys = [p[key] for p in pts]
            below = [y - (p.get(f"{key}_lo") if p.get(f"{key}_lo") is not None else y)
                     for y, p in zip(ys, pts, strict=True)]  # fmt: skip
            above = [(p.get(f"{key}_hi") if p.get(f"{key}_hi") is not None else y) - y
                     for y, p in zip(ys, pts, strict=True)]  # fmt: skip
            line = ax.errorbar(
                [p["kl"] for p in pts], ys, yerr=[below, above],
                fmt="o-", ms=3.5, capsize=2, lw=1.1, label=method,
            )  # fmt: skip
            for p in pts:
                ax.annotate(
                    f"{p['multiplier']:g}", (p["kl"], p[key]), fontsize=6,
                    xytext=(2, 2), textcoords="offset points", color=line[0].get_color(),
                )  # fmt: skip
        entry = report.get("matched", {}).get(direction, {})
        if entry.get("effect"):
            sign = 1 if direction == "increase" else -1
            ax.axhline(sign * entry["effect"], color="grey", lw=0.8, ls=":")
            parts = [
                f"{m} {v['kl']:.3g}" for m, v in entry["methods"].items() if v["kl"] is not None
            ]
            label += f"\nKL at matched |effect| {entry['effect']:.2f}: " + ", ".join(parts)
            label = textwrap.fill(label, 80, replace_whitespace=False)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlim(left=0.0)
        ax.set_xlabel("side effect: KL(steered ‖ unsteered) on neutral prompts")
        ax.set_ylabel("effect: Δ logit diff (behaviour − contrast answer)")
        ax.set_title(label, fontsize=7)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    _save(fig, path)


def compare_overlap(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Per circuit: overlap of each vector's top-k neurons with the circuit, per layer (cell
    text: overlap, expected under the null, permutation p); colour: −log10 p."""
    circuits = list(report["overlap"])
    fig, axes = subplots(
        len(circuits), 1, figsize=(1.2 + 1.1 * _n_layers(report), 1.0 + 1.0 * _n_vectors(report)
                                   * len(circuits)), squeeze=False,
    )  # fmt: skip
    for ax, cname in zip(axes[:, 0], circuits, strict=True):
        vectors = list(report["overlap"][cname])
        layers = sorted(int(k) for k in report["overlap"][cname][vectors[0]]["layers"])
        grid = [[0.0] * len(layers) for _ in vectors]
        texts: list[list[str | None]] = [[None] * len(layers) for _ in vectors]
        for i, v in enumerate(vectors):
            res = report["overlap"][cname][v]
            for j, ly in enumerate(layers):
                cell = res["layers"][str(ly)]
                p = cell["overlap_p"]
                grid[i][j] = -math.log10(p) if p else 0.0
                texts[i][j] = f"{cell['overlap']} ({cell['expected_overlap']:.1f})\np={p:.2g}"
        im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0.0)
        annotate_cells(ax, im, texts, fontsize=6)
        ax.set_xticks(range(len(layers)), [f"L{ly}" for ly in layers])
        labels = [
            f"{v} (total {report['overlap'][cname][v]['total_overlap']}, "
            f"p={report['overlap'][cname][v]['total_overlap_p']:.2g})"
            for v in vectors
        ]
        ax.set_yticks(range(len(vectors)), labels, fontsize=7)
        ax.set_title(f"{cname} circuit: top-k vector neurons in the circuit", fontsize=8)
        fig.colorbar(im, ax=ax, label="−log10 p")
    fig.suptitle(title)
    _save(fig, path)


def _n_layers(report: Mapping[str, Any]) -> int:
    first = next(iter(report["overlap"].values()))
    return len(next(iter(first.values()))["layers"])


def _n_vectors(report: Mapping[str, Any]) -> int:
    return len(next(iter(report["overlap"].values())))


#: (multiplier, mean, interval low, interval high) of one arm at one multiplier
DosePoint = tuple[float, float, float | None, float | None]
CONTROL_COLOURS = ("grey", "tab:olive", "tab:brown", "tab:pink")


def draw_dose_response(
    ax: Any, curves: Mapping[str, Sequence[DosePoint]], controls: Sequence[str] = ()
) -> None:
    """The one dose-response drawing: each arm's mean against the multiplier with its interval
    as a band; the arms named in ``controls`` dashed, in muted colours. Used for the steering
    reports' figures and the CAA-vs-circuit sweeps alike."""
    n_control = 0
    for label, points in curves.items():
        pts = sorted(p for p in points if p[1] is not None)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        if label in controls:
            style, colour = "s--", CONTROL_COLOURS[n_control % len(CONTROL_COLOURS)]
            n_control += 1
        else:
            style, colour = "o-", None
        line = ax.plot(xs, [p[1] for p in pts], style, color=colour, label=label)[0]
        if all(p[2] is not None and p[3] is not None for p in pts):
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.2,
                            color=line.get_color(), linewidth=0)  # fmt: skip
    ax.set_xlabel("multiplier")
    ax.grid(alpha=0.3)


def steering_dose_response(report: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Dose-response of a steering report: the steered condition and its random control (mean
    and bootstrap interval over prompts) against the multiplier, one panel per metric, with the
    unsteered value as a dotted line. Multipliers outside the side-effect budget are crossed out
    in red on every panel (they stay in the plot and are never counted), the KL panel shows the
    budget as a dashed line, and the primary panel stars the multiplier each direction's
    verdict was judged at."""
    primary = report["summary"]["primary"]
    names = [primary, "kl_neutral"]
    names += [m for m in ("accuracy", "text_rate") if m in report["metrics"] and m != primary]
    mults = list(report["multipliers"])
    label = "CAA vector" if report.get("steering") == "vector" else f"{report['method']} circuit"
    control = (
        "random vector (norm-matched)"
        if report.get("steering") == "vector"
        else ("random neurons (layer-matched)")
    )
    budget = report["budget"]
    fig, axes = subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        cells = report["metrics"][name]
        curves = {
            text: [
                (m, c["mean"], c["lo"], c["hi"])
                for m, c in ((m, cells[f"m={m:g}"][cond]) for m in mults)
            ]
            for cond, text in (("steered", label), ("control", control))
        }
        draw_dose_response(ax, curves, controls=[control])
        ax.axhline(cells["unsteered"]["mean"], color="black", lw=0.8, ls=":", label="unsteered")
        over = [m for m in mults if not budget["multipliers"][f"m={m:g}"]["in_budget"]]
        if over:
            ax.scatter(over, [cells[f"m={m:g}"]["steered"]["mean"] for m in over], marker="x",
                       s=60, color="red", zorder=5, label="outside side-effect budget")  # fmt: skip
        if name == "kl_neutral":
            ax.axhline(budget["max_kl"], color="red", lw=0.8, ls="--", label="KL budget")
        if name == primary:
            judged = [a["multiplier"] for k, a in report["summary"].items()
                      if k in ("suppress", "amplify") and isinstance(a, Mapping) and a["in_budget"]]  # fmt: skip
            ax.scatter(judged, [cells[f"m={m:g}"]["steered"]["mean"] for m in judged],
                       marker="*", s=140, color="gold", edgecolor="black", zorder=6,
                       label="verdict (best in budget)")  # fmt: skip
        ax.set_title(name.replace("_", " "))
    axes[0][0].legend(fontsize=7)
    if len(names) > 1:
        axes[0][1].legend(fontsize=7)
    conf = round(100 * report["bootstrap"]["confidence"])
    fig.suptitle(f"{title} ({conf} % bootstrap CI over {report['n_test']} test prompts)")
    _save(fig, path)


def steering_leakage(summary: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Heatmaps of the task × task leakage matrix: change of each other task's accuracy when a
    task's circuit (or a behaviour's circuit / CAA vector) is suppressed or amplified."""
    labels = [k for k in ("suppress", "amplify") if summary["leakage"].get(k)]
    fig, axes = subplots(1, max(1, len(labels)), figsize=(5.5 * max(1, len(labels)), 4.2),
                             squeeze=False)  # fmt: skip
    for ax, label in zip(axes[0], labels, strict=False):
        rows = sorted(summary["leakage"][label])
        cols = sorted({c for r in rows for c in summary["leakage"][label][r]})
        grid = [[summary["leakage"][label][r].get(c, math.nan) for c in cols] for r in rows]
        im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        annotate_cells(
            ax, im, [[None if math.isnan(v) else f"{v:+.2f}" for v in line] for line in grid]
        )
        ax.set_title(f"{label}: Δ accuracy of other tasks")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    _save(fig, path)


def robustness_matrix(summary: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Every verdict (rows) on every training seed (columns): green yes, red no, grey where that
    seed has no such verdict, a method's name written in; robust rows are marked ✓."""
    keys = list(summary["verdicts"])
    seeds = [str(s) for s in summary["seeds"]]
    colour = {True: 1.0, False: -1.0}
    grid, text = [], []
    for key in keys:
        v = summary["verdicts"][key]
        row, labels = [], []
        for s in seeds:
            value = v["values"].get(s)
            if isinstance(value, bool):
                row.append(colour[value])
                labels.append("yes" if value else "no")
            else:
                same = value is not None and value == v["majority"]
                row.append(0.5 if same else (math.nan if value is None else -0.5))
                labels.append("—" if value is None else str(value))
        grid.append(row)
        text.append(labels)
    height = max(2.5, 0.28 * len(keys) + 1.2)
    fig, axes = subplots(1, 1, figsize=(3.0 + 1.6 * len(seeds), height), squeeze=False)
    ax = axes[0][0]
    im = ax.imshow(grid or [[math.nan]], cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(seeds)), [f"seed {s}\n{summary['models'][s]}" for s in seeds])
    marks = ["✓ " if summary["verdicts"][k]["robust"] else "✗ " for k in keys]
    ax.set_yticks(range(len(keys)), [m + k for m, k in zip(marks, keys, strict=True)], fontsize=7)
    annotate_cells(ax, im, text)
    ax.set_title(f"{summary['n_robust']} of {summary['n_verdicts']} verdicts agree on every seed")
    fig.suptitle(title)
    _save(fig, path)
