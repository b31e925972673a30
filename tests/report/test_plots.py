"""The report's figures are readable: no panel, colour bar, tick label or title overlaps
another, and numbers on heatmap cells contrast with the cell (white on dark, black on light).
Checked on the laid-out matplotlib figure, the same one the PNG is written from."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgb

from circuitlab.report import plots

TASKS = ["capitals", "induction", "ioi", "refusal", "sentiment", "sva"]


def leakage() -> dict[str, Any]:
    def grid(sign: float) -> dict[str, dict[str, float]]:
        return {
            r: {c: sign * ((i * 7 + j * 3) % 11 - 5) / 5 for j, c in enumerate(TASKS) if c != r}
            for i, r in enumerate(TASKS)
        }

    return {"leakage": {"suppress": grid(-1.0), "amplify": grid(1.0)}}


def overlap_report() -> dict[str, Any]:
    def vector(p: float) -> dict[str, Any]:
        layers = {str(ly): {"overlap": ly, "expected_overlap": 1.5, "overlap_p": p / (ly + 1)}
                  for ly in range(4)}  # fmt: skip
        return {"layers": layers, "total_overlap": 6, "total_overlap_p": p}

    vectors = {"neuron_diff": vector(1e-4), "mlp_out": vector(0.3), "resid": vector(0.9)}
    return {"overlap": {"lrp": vectors, "contrastive": vectors}}


def pareto_report() -> dict[str, Any]:
    def point(m: float) -> dict[str, Any]:
        return {"multiplier": m, "kl": 0.01 * m * m, "effect_negative": 0.4 * m,
                "effect_negative_ci": 0.1, "effect_positive": -0.3 * m, "effect_positive_ci": 0.1}  # fmt: skip

    methods = ["caa", "lrp_neurons", "lrp_random_neurons", "lrp_vector"]
    return {
        "sweep": {m: {f"{k:g}": point(k) for k in (0.5, 2.0, 4.0)} for m in methods},
        "neutral_multiplier": dict.fromkeys(methods, 0.0),
        "matched": {
            "increase": {"effect": 0.8, "methods": {m: {"kl": 0.05} for m in methods}},
            "decrease": {"effect": 0.6, "methods": {m: {"kl": 0.04} for m in methods}},
        },
    }


FIGURES = {
    "steering_leakage": lambda path: plots.steering_leakage(leakage(), path, "toy: leakage"),
    "compare_overlap": lambda path: plots.compare_overlap(overlap_report(), path, "toy refusal"),
    "compare_pareto": lambda path: plots.compare_pareto(pareto_report(), path, "toy refusal"),
}


def drawn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> Any:
    """The figure `name` draws, laid out as when it is saved (and the PNG written)."""
    figures = []
    save = plots._save

    def keep(fig: Any, path: Any) -> None:
        figures.append(fig)
        fig.canvas.draw()
        bboxes = _boxes(fig)  # before _save closes it
        figures.append(bboxes)
        save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    FIGURES[name](tmp_path / f"{name}.png")
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    return figures


def _boxes(fig: Any) -> dict[str, Any]:
    renderer = fig.canvas.get_renderer()
    axes = {f"axes {i} ({ax.get_label() or ax.get_title()[:30]})": ax.get_tightbbox(renderer)
            for i, ax in enumerate(fig.axes)}  # fmt: skip
    title = fig._suptitle.get_window_extent(renderer) if fig._suptitle is not None else None
    texts = [
        (t.get_text(), to_rgb(t.get_color()), t.get_position()) for ax in fig.axes for t in ax.texts
    ]
    return {"axes": axes, "suptitle": title, "texts": texts, "fig": fig}


def _overlap(a: Any, b: Any, slack: float = 1.0) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_no_panel_colour_bar_or_title_overlaps_another(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    boxes = drawn(monkeypatch, tmp_path, name)[1]
    clashes = [
        (a, b) for (a, ba), (b, bb) in combinations(boxes["axes"].items(), 2) if _overlap(ba, bb)
    ]
    assert not clashes, f"{name}: overlapping panels (with their labels): {clashes}"
    if boxes["suptitle"] is not None:
        hit = [a for a, bb in boxes["axes"].items() if _overlap(boxes["suptitle"], bb)]
        assert not hit, f"{name}: the suptitle overlaps {hit}"


def test_heatmap_numbers_contrast_with_their_cells(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    boxes = drawn(monkeypatch, tmp_path, "steering_leakage")[1]
    colours = {text: rgb for text, rgb, _ in boxes["texts"]}
    assert colours["-1.00"] == to_rgb("white") and colours["+1.00"] == to_rgb("white")  # dark ends
    assert colours["+0.00"] == to_rgb("black")  # RdBu's light middle


@pytest.mark.skipif(
    __import__("circuitlab.report.screenshot", fromlist=["x"]).find_browser() is None,
    reason="no Chromium here (apt-get install chromium); `make screenshots` needs it too",
)
def test_a_figure_in_headless_chromium(tmp_path: Path) -> None:
    """`make screenshots`' path: a page with a report figure, drawn by the browser."""
    import base64

    from PIL import Image

    from circuitlab.report.screenshot import screenshot

    png = tmp_path / "leakage.png"
    FIGURES["steering_leakage"](png)
    uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    page = tmp_path / "page.html"
    page.write_text(f'<html><body style="margin:0"><img src="{uri}" width="1000"></body></html>')
    shot = screenshot(page, tmp_path / "shot.png", width=1000, height=700)
    pixels = Image.open(shot).convert("RGB").resize((100, 70))
    colours = {pixels.getpixel((x, y)) for x in range(100) for y in range(70)}
    assert len(colours) > 50  # the figure was drawn, not a blank page
