"""Is an LRP circuit faithful? Ablation curves against random controls, and calibration.

All evaluation runs on the **test** split; circuits come from attributions on the train split.
Neurons live on the `[layers, positions, d_mlp]` grid of end-relative offsets (see
`circuitlab.lrp.attribution`); "all neurons" means every cell of that grid, and ablations
touch only those cells (the analysed positions), never other positions.

For a circuit of size `s` (a fraction of all neurons: the `s`-share of cells with the largest
|aggregated attribution|) and an ablation (`mean`: each cell replaced by its mean activation
over the train prompts; `zero`), with `M` the mean metric over test prompts:

* `M_full`: no ablation; `M_none`: every analysed neuron ablated;
* **faithfulness** (keep only the circuit): `(M_keep − M_none) / (M_full − M_none)`;
* **removal drop** (ablate the circuit): `(M_full − M_removed) / (M_full − M_none)`.

The random control draws, per seed, the same number of neurons in every (layer, position) as
the circuit has there. Intervals are 95 % Student-t intervals over the seeds. The curve's area
is the mean faithfulness over log10(size) (trapezoid rule, normalised to the size range).

Calibration: Spearman's ρ between each attribution variant (plain gradient × activation and
LRP under each attention rule, all on the test prompts) and the measured effect of zero-ablating
each of `calibration_neurons` neurons drawn uniformly from the grid, one at a time, with a 95 %
percentile bootstrap interval over the drawn neurons (one draw of a few hundred neurons moves ρ
by about ±0.1: the interval says how much).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from circuitlab.devices import to_device_of
from circuitlab.lrp.attribution import (
    AttributionOptions,
    attribute_rows,
    metric_values,
    readout_logits,
)
from circuitlab.lrp.rules import ATTENTION_RULES
from circuitlab.lrp.selection import aggregate, top_fraction_mask
from circuitlab.models.loading import LoadedModel
from circuitlab.progress import bar as progress_bar
from circuitlab.prompts import PromptBatch, batches, encode_rows
from circuitlab.stats import spearman_interval, t_interval
from circuitlab.types import TaskRow


@dataclass(frozen=True)
class Grid:
    """Where the analysed neurons sit: `n_positions` end-relative offsets, BOS handling."""

    n_positions: int
    start: int  # the first absolute position that may be touched (1 when BOS is filtered)


class AblationRunner:
    """Mean metric over a fixed set of test batches with grid cells replaced by given values."""

    def __init__(
        self, lm: LoadedModel, rows: Sequence[TaskRow], grid: Grid, metric: str, batch_size: int
    ) -> None:
        self.lm, self.grid, self.metric = lm, grid, metric
        self.batches: list[PromptBatch] = [
            encode_rows(chunk, lm.tokenizer).to(lm.device) for chunk in batches(rows, batch_size)
        ]
        self.n = sum(len(b) for b in self.batches)

    def _cell_index(self, batch: PromptBatch) -> tuple[Tensor, Tensor]:
        """`[B, S]` grid offset index of every absolute position, and whether it is analysed."""
        seq = batch.input_ids.shape[1]
        s = torch.arange(seq, device=batch.input_ids.device)
        j = s[None, :] - batch.last[:, None] + self.grid.n_positions - 1
        inside = (j >= 0) & (s[None, :] <= batch.last[:, None]) & (s[None, :] >= self.grid.start)
        return j.clamp(0, self.grid.n_positions - 1), inside

    def metric_with(self, ablate: Tensor | None, values: Tensor | None) -> float:
        """Mean metric with the cells of `ablate` (`[L, P, D]` bool) set to `values`
        (`[L, P, D]`; None = zero). `ablate=None`: the plain model."""
        total = 0.0
        for batch in self.batches:
            total += float(self._batch_metric(batch, ablate, values).sum())
        return total / self.n

    def _batch_metric(
        self, batch: PromptBatch, ablate: Tensor | None, values: Tensor | None
    ) -> Tensor:
        lm = self.lm
        with torch.no_grad():
            if ablate is None:
                last = readout_logits(lm, batch)
            else:
                j, inside = self._cell_index(batch)

                def edit(layer: int, x: Tensor) -> Tensor:  # on the layer's device
                    jx = to_device_of(j, x)
                    m = to_device_of(ablate[layer], x)[jx] & to_device_of(inside, x)[..., None]
                    if values is None:
                        v = torch.zeros_like(x)
                    else:
                        v = to_device_of(values[layer], x)[jx].to(x.dtype)
                    return torch.where(m, v, x)  # [B, S, D]

                layers = [int(i) for i in ablate.flatten(1).any(1).nonzero().flatten()]
                with lm.needs_adapter("LRP faithfulness").edit_neurons(lm.model, edit, layers):
                    last = readout_logits(lm, batch)
            return metric_values(last, batch.target, batch.counterfactual, self.metric)  # type: ignore[arg-type]

    def mean_activations(self, rows: Sequence[TaskRow], batch_size: int) -> Tensor:
        """Mean activation of every grid cell over `rows` (cells a prompt lacks don't count)."""
        lm, n_pos = self.lm, self.grid.n_positions
        dims = lm.dims
        total = torch.zeros(dims.n_layers, n_pos, dims.d_mlp, dtype=torch.float64)
        count = torch.zeros(n_pos, dtype=torch.float64)
        for chunk in batches(rows, batch_size):
            batch = encode_rows(chunk, lm.tokenizer).to(lm.device)
            j, inside = self._cell_index(batch)
            with (
                torch.no_grad(),
                lm.needs_adapter("LRP faithfulness").capture_neurons(lm.model) as acts,
            ):
                lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            onehot = torch.nn.functional.one_hot(j, n_pos).to(torch.float64) * inside[..., None]
            for layer in range(dims.n_layers):  # [B,S,P]ᵀ·[B,S,D] → [P, D], on the layer's device
                act = acts[layer]
                total[layer] += torch.einsum(
                    "bsp,bsd->pd", to_device_of(onehot, act), act.double()
                ).cpu()
            count += onehot.sum((0, 1)).cpu()
        return (total / count.clamp(min=1)[None, :, None]).float()


# ------------------------------------------------------------------------- helpers
def matched_random_mask(circuit: Tensor, valid: Tensor, generator: torch.Generator) -> Tensor:
    """A random `[L, P, D]` mask with as many cells per (layer, position) as `circuit`,
    drawn among `valid` cells."""
    counts = circuit.sum(-1, keepdim=True)  # [L, P, 1]
    keys = torch.rand(circuit.shape, generator=generator)
    keys = torch.where(valid, keys, torch.full_like(keys, 2.0))  # invalid cells sort last
    ranks = keys.argsort(-1).argsort(-1)
    return ranks < counts


def curve_area(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Mean of `values` over log10(size): trapezoid area / log-size range."""
    x = np.log10(np.asarray(sizes, dtype=float))
    y = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(y[0])
    order = np.argsort(x)
    return float(np.trapezoid(y[order], x[order]) / (x[order][-1] - x[order][0]))


# --------------------------------------------------------------------------- stage
def evaluate_faithfulness(
    lm: LoadedModel,
    train_rows: Sequence[TaskRow],
    test_rows: Sequence[TaskRow],
    grid_scores: Tensor,
    *,
    opts: AttributionOptions,
    sizes: Sequence[float],
    ablations: Sequence[str],
    random_seeds: int,
    calibration_neurons: int,
    target: float,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """The faithfulness report of one circuit (see the module docstring).

    `grid_scores`: the aggregated train-split attribution `[L, P, D]` the circuit sizes are
    cut from. Returns a JSON-ready dict.
    """
    n_pos = grid_scores.shape[1]
    start = 1 if opts.filter_bos and opts.last_n_positions is None else 0
    grid = Grid(n_positions=n_pos, start=start)
    runner = AblationRunner(lm, test_rows, grid, opts.metric, opts.batch_size)
    valid = _valid_cells(runner, grid_scores.shape)
    full = runner.metric_with(None, None)
    reference = {
        "mean": runner.mean_activations(train_rows, opts.batch_size),
        "zero": None,
    }
    g = torch.Generator().manual_seed(seed)
    report: dict[str, Any] = {
        "metric": opts.metric,
        "metric_full": full,
        "n_test_prompts": runner.n,
        "n_cells": int(valid.sum()),
        "grid": dict(zip(("layers", "positions", "neurons"), grid_scores.shape, strict=True)),
        "ablations": {},
    }
    steps = len(ablations) * len(sizes) * (1 + random_seeds)
    bar = progress_bar(total=steps, desc="faithfulness", unit="size", enabled=progress)
    for ablation in ablations:
        values = reference[ablation]
        none = runner.metric_with(valid, values)
        span = full - none

        def share(delta: float, span: float = span) -> float:
            return delta / span if abs(span) > 1e-12 else float("nan")

        rows = []
        for size in sizes:
            circuit = top_fraction_mask(grid_scores, size) & valid
            keep = runner.metric_with(valid & ~circuit, values)
            removed = runner.metric_with(circuit, values)
            bar.update()
            rand_f, rand_d = [], []
            for _ in range(random_seeds):
                rnd = matched_random_mask(circuit, valid, g)
                rand_f.append(share(runner.metric_with(valid & ~rnd, values) - none))
                rand_d.append(share(full - runner.metric_with(rnd, values)))
                bar.update()
            f_mean, f_half = t_interval(rand_f)
            d_mean, d_half = t_interval(rand_d)
            faith = share(keep - none)
            rows.append(
                {
                    "size": size,
                    "n_neurons": int(circuit.sum()),
                    "faithfulness": faith,
                    "removal_drop": share(full - removed),
                    "metric_keep": keep,
                    "metric_removed": removed,
                    "random_faithfulness": f_mean,
                    "random_faithfulness_ci": f_half,
                    "random_removal_drop": d_mean,
                    "random_removal_drop_ci": d_half,
                    "margin": faith - f_mean,
                    "beats_random": bool(faith - f_mean > f_half),
                }
            )
        faith_curve = [r["faithfulness"] for r in rows]
        reaching = [r["size"] for r in rows if r["faithfulness"] >= target]
        report["ablations"][ablation] = {
            "metric_none": none,
            "curve": {f"{r['size']:g}": r for r in rows},
            "area": curve_area(sizes, faith_curve),
            "random_area": curve_area(sizes, [r["random_faithfulness"] for r in rows]),
            "smallest_size_reaching_target": min(reaching) if reaching else None,
            "sizes_beating_random": sum(r["beats_random"] for r in rows),
        }
        log(f"{ablation} ablation: area {report['ablations'][ablation]['area']:.3f}")
    bar.close()
    report["target_faithfulness"] = target
    report["calibration"] = calibrate(
        lm, test_rows, runner, valid, opts, calibration_neurons, g, full, progress
    )
    return report


def _valid_cells(runner: AblationRunner, shape: torch.Size) -> Tensor:
    """Cells that exist in at least one test prompt (by offset), for every layer and neuron."""
    n_layers, n_pos, d_mlp = shape
    present = torch.zeros(n_pos, dtype=torch.bool)
    for batch in runner.batches:
        j, inside = runner._cell_index(batch)
        present[j[inside].unique().cpu()] = True
    return present[None, :, None].expand(n_layers, n_pos, d_mlp).clone()


#: bootstrap resamples of the calibration ρ over its sampled neurons
CALIBRATION_RESAMPLES = 1000


def calibrate(
    lm: LoadedModel,
    test_rows: Sequence[TaskRow],
    runner: AblationRunner,
    valid: Tensor,
    opts: AttributionOptions,
    n_neurons: int,
    generator: torch.Generator,
    full: float,
    progress: bool,
) -> dict[str, Any]:
    """Spearman ρ between attribution variants and measured single-neuron ablation effects."""
    cells = valid.flatten().nonzero().flatten()
    pick = cells[torch.randperm(len(cells), generator=generator)[: min(n_neurons, len(cells))]]
    effects = []
    for idx in progress_bar(
        pick.tolist(), desc="single-neuron ablations", unit="neuron", enabled=progress
    ):
        one = torch.zeros(valid.numel(), dtype=torch.bool)
        one[idx] = True
        effects.append(full - runner.metric_with(one.view(valid.shape), None))
    variants: dict[str, AttributionOptions] = {
        "grad_x_act": _replace(opts, lrp=False, attention_rule="full"),
        **{
            f"lrp_{rule}": _replace(opts, lrp=True, attention_rule=rule) for rule in ATTENTION_RULES
        },
    }
    out: dict[str, Any] = {"n_neurons": len(pick), "sampling": "uniform over the analysed grid"}
    intervals: dict[str, dict[str, float] | None] = {}
    for name, variant in variants.items():
        attr = attribute_rows(lm, test_rows, variant, progress=False)
        scores = aggregate(attr, "mean")
        n_pos = scores.shape[1]
        if n_pos != valid.shape[1]:  # the test prompts may be shorter/longer than train's
            scores = _fit_positions(scores, valid.shape[1])
        x = scores.flatten()[pick].numpy()
        rho = stats.spearmanr(x, np.asarray(effects)).statistic
        out[name] = float(rho) if np.isfinite(rho) else None
        # how much ρ moves with the neurons drawn: one draw of a few hundred neurons is noisy
        ci = spearman_interval(x, effects, resamples=CALIBRATION_RESAMPLES, seed=0)
        ok = ci is not None and out[name] is not None
        intervals[name] = {"lo": ci[0], "hi": ci[1]} if ok else None  # type: ignore[index]
    out["interval"] = {
        "kind": f"95 % percentile bootstrap over the sampled neurons ({CALIBRATION_RESAMPLES})",
        **intervals,
    }
    return out


def _fit_positions(scores: Tensor, n_pos: int) -> Tensor:
    """Align an end-relative grid to `n_pos` offsets (pad with zeros or cut the oldest)."""
    have = scores.shape[1]
    if have >= n_pos:
        return scores[:, have - n_pos :]
    pad = torch.zeros(scores.shape[0], n_pos - have, scores.shape[2])
    return torch.cat([pad, scores], 1)


def _replace(opts: AttributionOptions, **changes: Any) -> AttributionOptions:
    from dataclasses import replace

    return replace(opts, **changes)
