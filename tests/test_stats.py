"""The percentile bootstrap: deterministic, brackets the mean, agrees with scipy, covers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from circuitlab.errors import ConfigError, DatasetError
from circuitlab.stats import bootstrap_ci


def test_deterministic_and_brackets_mean() -> None:
    x = np.random.default_rng(0).normal(2.0, 1.0, 40)
    a = bootstrap_ci(x, resamples=2000, seed=3)
    assert a == bootstrap_ci(x, resamples=2000, seed=3)
    assert a["lo"] < a["mean"] < a["hi"] and a["mean"] == pytest.approx(x.mean())
    assert a != bootstrap_ci(x, resamples=2000, seed=4)
    const = bootstrap_ci(np.full(10, 0.5), resamples=200)
    assert const == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 10}


def test_agrees_with_scipy_percentile_bootstrap() -> None:
    x = np.random.default_rng(1).exponential(1.0, 60)
    ours = bootstrap_ci(x, resamples=5000, seed=0)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=5000, method="percentile", random_state=0
    ).confidence_interval
    width = ref.high - ref.low
    assert abs(ours["lo"] - ref.low) < 0.1 * width
    assert abs(ours["hi"] - ref.high) < 0.1 * width


def test_coverage_near_nominal() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for s in range(200):
        x = rng.normal(1.0, 2.0, 50)
        ci = bootstrap_ci(x, resamples=500, seed=s)
        hits += ci["lo"] <= 1.0 <= ci["hi"]
    assert 0.88 <= hits / 200 <= 0.99


def test_bad_input() -> None:
    with pytest.raises(DatasetError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(DatasetError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ConfigError, match="level"):
        bootstrap_ci([1.0], level=1.0)


def test_beats_needs_interval_and_size() -> None:
    from circuitlab.steering.evaluate import beats

    assert beats({"mean": -0.2, "lo": -0.3, "hi": -0.1}, -1, 0.01)
    assert not beats({"mean": -0.2, "lo": -0.3, "hi": 0.1}, -1, 0.01)  # interval covers 0
    assert not beats({"mean": 1e-5, "lo": 1e-6, "hi": 2e-5}, 1, 0.01)  # saturated: too small
    assert beats({"mean": 1e-5, "lo": 1e-6, "hi": 2e-5}, 1, 0.0)
    assert not beats({"mean": 0.2, "lo": 0.1, "hi": 0.3}, -1, 0.0)  # wrong direction


def test_spearman_interval_resamples_pairs_together() -> None:
    from circuitlab.stats import bootstrap_indices, spearman_interval

    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    rho = stats.spearmanr(x, y).statistic
    lo, hi = spearman_interval(x, y, resamples=2000, seed=1)
    assert lo < rho < hi and 0.2 < hi - lo < 0.4  # n = 200: about ±0.13
    # each bootstrap ρ is scipy's ρ of the resampled pairs
    idx = bootstrap_indices(200, 2000, 1)
    by_scipy = [stats.spearmanr(x[i], y[i]).statistic for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(by_scipy, [0.025, 0.975])), abs=1e-9)
    small = spearman_interval(x[:30], y[:30], resamples=2000, seed=1)
    assert small is not None and small[1] - small[0] > hi - lo  # fewer neurons, wider
    assert spearman_interval(np.ones(10), np.arange(10.0)) is None  # ρ undefined
    with pytest.raises(DatasetError, match="paired"):
        spearman_interval(x, y[:10])
