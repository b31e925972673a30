"""How many neurons does it take to write the MLP-output difference? A sparse non-negative
decomposition onto the signed down-projection columns (R² against the number of neurons), the
least-squares fit on the seed's top-k projection columns, and the vector rebuilt from a
circuit's neurons alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import optimize
from torch import Tensor

from circuitlab.compare.overlap import EPS, DownProjections, column_projections, stable_topk
from circuitlab.devices import to_device_of
from circuitlab.errors import ArtifactError


def r_squared(target: np.ndarray, fit: np.ndarray) -> float:
    """Share of ‖target‖² reconstructed: 1 − ‖target − fit‖² / ‖target‖² (no centring: the
    target is a difference vector, its zero is meaningful)."""
    denom = float(target @ target)
    if denom <= EPS:
        return 0.0
    resid = target - fit
    return 1.0 - float(resid @ resid) / denom


def sparse_nonnegative(
    target: Tensor, columns: Tensor, sparsity: Sequence[int], *, signed: bool = True
) -> dict[int, dict[str, Any]]:
    """Greedy non-negative matching pursuit with an NNLS refit on the growing support.

    Each step adds the neuron whose (normalised) column correlates best with the residual, in
    the sign of that correlation (only positive correlations when `signed` is False), then refits
    all coefficients with `scipy.optimize.nnls` on the signed columns. Supports are nested, so
    R² never decreases with k. Returns, for each k of `sparsity` (capped at the number of
    usable neurons), R², the support (neuron indices), signs and coefficients.
    """
    y = target.double().numpy()
    w = columns.double().numpy()  # [d_model, D]
    d = w.shape[1]
    norms = np.linalg.norm(w, axis=0)
    unit = w / np.where(norms > EPS, norms, 1.0)
    ks = sorted({min(int(k), d) for k in sparsity if k >= 1})
    out: dict[int, dict[str, Any]] = {}
    support: list[int] = []
    signs: list[float] = []
    coef = np.zeros(0)
    fit = np.zeros_like(y)
    chosen = np.zeros(d, dtype=bool)
    for step in range(1, (ks[-1] if ks else 0) + 1):
        corr = unit.T @ (y - fit)
        score = np.abs(corr) if signed else corr.copy()
        score[chosen | (norms <= EPS)] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]) or score[best] <= 1e-12:
            break  # nothing left that reduces the residual
        chosen[best] = True
        support.append(best)
        signs.append(1.0 if corr[best] >= 0 or not signed else -1.0)
        a = w[:, support] * np.asarray(signs)[None, :]
        coef, _ = optimize.nnls(a, y)
        fit = a @ coef
        if step in ks:
            out[step] = _fit_record(y, fit, support, signs, coef)
    final = _fit_record(y, fit, support, signs, coef)
    for k in ks:  # stopped early: the larger supports are the last one
        out.setdefault(k, final)
    return out


def _fit_record(
    y: np.ndarray, fit: np.ndarray, support: list[int], signs: list[float], coef: np.ndarray
) -> dict[str, Any]:
    return {
        "r2": r_squared(y, fit),
        "support": list(support),
        "signs": list(signs),
        "coef": [float(c) for c in coef],
        "nnz": int((coef > 0).sum()),
    }


def least_squares_r2(target: Tensor, columns: Tensor) -> float:
    """R² of the unconstrained least-squares fit of `target` on `columns` (`[d_model, k]`)."""
    if columns.shape[1] == 0:
        return 0.0
    y = target.double().numpy()
    a = columns.double().numpy()
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return r_squared(y, a @ coef)


def decompose_layer(
    mlp_diff: Tensor,
    w: Tensor,
    neuron_diff: Tensor | None,
    circuits: Mapping[str, Tensor],
    sparsity: Sequence[int],
    *,
    signed: bool,
) -> dict[str, Any]:
    """R² against sparsity for one layer's MLP-output difference (`[d_model]`), `w` `[d_model, D]`.

    Curves (keyed by k): `nnls` (sparse non-negative), `projection_lstsq` (least squares on the
    seed's top-k projection columns), `neuron_diff_topk` (the exact per-neuron difference
    truncated to its top-k |Δa_i|·‖W[:, i]‖, when the difference is given); `neuron_diff_full`
    (all neurons: a consistency check, ≈ 1); per circuit (`circuits`: name → `[D]` mask):
    `lstsq` (least squares on its columns) and `rebuilt` (Σ over its neurons of Δa_i W[:, i]).
    """
    y = mlp_diff.double().numpy()
    nn_fit = sparse_nonnegative(mlp_diff, w, sparsity, signed=signed)
    proj = (column_projections(mlp_diff[None], w[None])[0]).abs()
    order = stable_topk(proj[None], proj.shape[0])[0]
    ks = sorted(nn_fit)
    out: dict[str, Any] = {
        "nnls": {str(k): nn_fit[k]["r2"] for k in ks},
        "nnls_nnz": {str(k): nn_fit[k]["nnz"] for k in ks},
        "projection_lstsq": {str(k): least_squares_r2(mlp_diff, w[:, order[:k]]) for k in ks},
        "circuits": {},
    }
    wd = w.double().numpy()
    nd = neuron_diff.double().numpy() if neuron_diff is not None else None
    if nd is not None:
        contrib = np.abs(nd) * np.linalg.norm(wd, axis=0)
        top = np.argsort(-contrib, kind="stable")
        out["neuron_diff_topk"] = {str(k): r_squared(y, wd[:, top[:k]] @ nd[top[:k]]) for k in ks}
        out["neuron_diff_full"] = r_squared(y, wd @ nd)
    for name, mask in circuits.items():
        keep = mask.numpy().astype(bool)
        entry: dict[str, Any] = {
            "size": int(keep.sum()),
            "lstsq": least_squares_r2(mlp_diff, w[:, mask]),
        }
        if nd is not None:
            entry["rebuilt"] = r_squared(y, wd[:, keep] @ nd[keep])
        out["circuits"][name] = entry
    return out


# ------------------------------------------------------------ circuit-rebuilt vector
def rebuilt_vector(
    neuron_diff: Tensor, w_down: Tensor | DownProjections, circuit: Tensor
) -> Tensor:
    """`[L, d_model]`: per layer, Σ over the circuit's neurons of Δa_i · W_l[:, i] (each layer
    on its weight's device; only the `[d_model]` result reaches the host)."""
    if neuron_diff.shape != circuit.shape or len(w_down) != circuit.shape[0]:
        raise ArtifactError(
            f"neuron differences {tuple(neuron_diff.shape)}, circuit mask "
            f"{tuple(circuit.shape)} and {len(w_down)} layers of down projections do not match"
        )
    kept = neuron_diff.float() * circuit
    out = []
    for layer, diff in enumerate(kept):
        w = w_down[layer].float()
        out.append(torch.einsum("ldn,ln->ld", w[None], to_device_of(diff, w)[None])[0].cpu())
    return torch.stack(out)
