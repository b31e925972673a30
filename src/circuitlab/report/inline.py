"""The figures drawn for the HTML report itself and inlined in it: the training curve, edge
circuits as SVG (Graphviz's rendering, else a layered drawing), dose-response curves; and every
PNG compacted for a screen before it is inlined (`data_uri`)."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from circuitlab.report.plots import DosePoint, draw_dose_response

#: Inlined PNGs are drawn for a screen: at most this wide, in an adaptive palette of this many
#: colours (plots are flat colours; the report shrinks about fourfold, tests/report).
SCREEN_WIDTH = 900
PALETTE = 128


def compact_png(png: bytes, max_width: int = SCREEN_WIDTH, colours: int = PALETTE) -> bytes:
    """``png`` at screen resolution (downscaled to ``max_width`` if wider) in an adaptive
    palette, optimised: the bytes the report inlines. Deterministic."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.width > max_width:
        height = round(image.height * max_width / image.width)
        image = image.convert("RGBA").resize((max_width, height), Image.Resampling.LANCZOS)
    flat = image.convert("RGB").quantize(
        colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    flat.save(out, format="PNG", optimize=True)
    return out.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG as an inline ``data:`` URI, compacted for the screen (`compact_png`)."""
    return "data:image/png;base64," + base64.b64encode(compact_png(png)).decode("ascii")


def svg_uri(svg: bytes) -> str:
    """A vector figure as an inline ``data:`` URI."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _fig_svg(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # fixed element ids and no date: the same figure gives the same bytes
    with plt.rc_context({"svg.hashsalt": "circuitlab", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _fig_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # no timestamp or software version in the PNG: same artifacts give the same bytes
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve_png(curve: Sequence[Mapping[str, Any]], title: str) -> bytes | None:
    points = [(p["step"], p["loss"]) for p in curve if p.get("loss") is not None]
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(6, 3))
    ax.plot([s for s, _ in points], [v for _, v in points], lw=1.2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    if lo > 0 and hi / lo > 10:  # log scale only when the loss falls by more than a decade
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return _fig_png(fig)


def circuit_graph_svg(kept: Sequence[str], n_layers: int, title: str) -> bytes | None:
    """Layered drawing of an edge circuit (SVG), used when Graphviz's `dot` is not installed:
    embeddings at the top, unembedding at the bottom, one column per head index (a head's
    Q/K/V inputs in a row just above its output, joined to it by a dotted line), MLPs and the
    residual ends in the middle column."""
    from circuitlab.acdc.graph import Node

    pairs = [tuple(e.split("->", 1)) for e in kept]
    if not pairs:
        return None
    nodes = sorted({n for p in pairs for n in p})
    parsed = {n: Node.parse(n) for n in nodes}
    heads = [p.head for p in parsed.values() if p.head is not None]
    centre = (max(heads, default=0)) / 2
    pos: dict[str, tuple[float, float]] = {}
    for n, node in parsed.items():
        row = float(node.graph_layer(n_layers))
        if node.head is None:
            pos[n] = (0.0, -row)
        else:
            x = 3.6 * (node.head - centre)
            if node.qkv:
                x += 1.15 * ("QKV".index(node.qkv) - 1)
                row -= 0.45
            pos[n] = (x, -row)
    plt = _plt()
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    fig, ax = plt.subplots(
        layout="constrained",
        figsize=(max(4.0, 0.4 * (max(xs) - min(xs)) + 2), 0.9 * (max(ys) - min(ys)) + 1.6),
    )
    for n, node in parsed.items():
        out = f"A{node.layer}.{node.head}" if node.qkv else None
        if out in pos:
            (x0, y0), (x1, y1) = pos[n], pos[out]
            ax.plot([x0, x1], [y0, y1], ls=":", color="#99a", lw=0.8, zorder=1)
    for s, d in pairs:
        ax.annotate(
            "",
            xy=pos[d],
            xytext=pos[s],
            arrowprops={"arrowstyle": "->", "color": "#5b7fa8", "lw": 0.9, "shrinkA": 9,
                        "shrinkB": 9, "connectionstyle": "arc3,rad=0.08"},
        )  # fmt: skip
    for n, (x, y) in pos.items():
        colour = "#fde9c8" if n.startswith("MLP") else "#dbe8f6" if n.startswith("A") else "#eee"
        ax.text(x, y, n, ha="center", va="center", fontsize=7, zorder=3,
                bbox={"boxstyle": "round,pad=0.25", "fc": colour, "ec": "#667"})  # fmt: skip
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    return _fig_svg(fig)


def dot_svg(dot_text: str) -> bytes | None:
    """The DOT text rendered by Graphviz as SVG, when the `dot` executable exists."""
    if shutil.which("dot") is None:
        return None
    import graphviz

    try:
        return graphviz.Source(dot_text).pipe(format="svg")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError):
        return None


def dose_response_png(
    curves: Mapping[str, Sequence[DosePoint]], ylabel: str, title: str
) -> bytes | None:
    """A dose-response figure for the report (`draw_dose_response`; arms whose name says
    "random" are the controls)."""
    if not any(curves.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(layout="constrained", figsize=(6, 3.4))
    draw_dose_response(ax, curves, controls=[k for k in curves if "random" in k])
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _fig_png(fig)
