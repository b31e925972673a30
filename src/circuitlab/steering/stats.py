"""Seeded, vectorised percentile bootstrap over prompts (paired when arrays share a length)."""

from __future__ import annotations

from typing import Any

import numpy as np

from circuitlab.steering.neurons import SteeringError


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`[resamples, n]` prompt indices drawn with replacement (the same for the same n/seed,
    so arrays over the same prompts are resampled together: a paired bootstrap)."""
    if n < 1:
        raise SteeringError("a confidence interval needs at least one prompt")
    if resamples < 1:
        raise SteeringError(f"bootstrap resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    values: Any, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of `values` (one per prompt) with a percentile bootstrap interval at `level`."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not 0 < level < 1:
        raise SteeringError(f"confidence level must be in (0, 1), got {level}")
    if not np.isfinite(x).all():
        raise SteeringError("bootstrap values hold NaN or inf")
    means = x[bootstrap_indices(len(x), resamples, seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    mean = float(x.mean())
    # the percentile interval of a mean always brackets the sample mean up to resampling noise;
    # clamp so a reported interval never excludes its own point estimate
    return {"mean": mean, "lo": float(min(lo, mean)), "hi": float(max(hi, mean)), "n": len(x)}
