"""Statistics shared by the stages, one implementation of each: the Student-t interval, the
seeded percentile bootstrap over prompts, and the KL divergence of next-token distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from circuitlab.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from torch import Tensor


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of a Student-t confidence interval."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float(arr.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr))
    return float(arr.mean()), float(half)


def kl_divergence(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """KL(p ‖ ref) = Σ p · (log p − log ref) over the last axis, from log-probabilities; one
    value per row, in nats. Not clamped: a row where p = ref may come out a rounding error below
    zero, which callers that report a side effect clamp, and ACDC (whose greedy decisions compare
    differences of it, as auto-circuit's do) keeps."""
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`[resamples, n]` prompt indices drawn with replacement (the same for the same n/seed,
    so arrays over the same prompts are resampled together: a paired bootstrap)."""
    if n < 1:
        raise DatasetError("a confidence interval needs at least one prompt")
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    values: Any, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of `values` (one per prompt) with a percentile bootstrap interval at `level`."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if not np.isfinite(x).all():
        raise DatasetError("bootstrap values hold NaN or inf")
    means = x[bootstrap_indices(len(x), resamples, seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    mean = float(x.mean())
    # the percentile interval of a mean always brackets the sample mean up to resampling noise;
    # clamp so a reported interval never excludes its own point estimate
    return {"mean": mean, "lo": float(min(lo, mean)), "hi": float(max(hi, mean)), "n": len(x)}


def spearman_interval(
    x: Any, y: Any, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Spearman's ρ between paired samples ``x`` and ``y``
    (the pairs are resampled together: e.g. the neurons of a calibration draw). None when a
    resample's ρ is undefined everywhere (constant data)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise DatasetError(f"Spearman's ρ needs paired samples, got {a.size} and {b.size}")
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    idx = bootstrap_indices(a.size, resamples, seed)
    ra = stats.rankdata(a[idx], axis=1)
    rb = stats.rankdata(b[idx], axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denom
    rho = rho[np.isfinite(rho)]
    if rho.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(rho, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
