"""Intervals for the results people compare: success rates and curves over seeds.

* `wilson_interval(successes, n)`: the Wilson score interval of a success
  rate (95% by default). Unlike the normal approximation it stays inside
  [0, 1] and keeps its coverage at 0/n and n/n, which evaluations of 25 or 100
  episodes often hit.
* `bootstrap_band(values)`: the mean over seeds (axis 0) of a curve and its
  percentile-bootstrap band, resampling seeds with replacement. With one seed
  there is no band (low = high = the value), and `enough_seeds` says so:
  nothing is called shown on one seed.
* `separated(a, b)`: whether two intervals do not overlap, and which is higher.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
MIN_SEEDS = 2
# The verdicts on a paper's effect (`paper_table.effects`, `der_results.der_effects`).
SHOWN, NOT_SHOWN, NOT_RUN = 'shown', 'not shown', 'not run'


def wilson_interval(successes: float, n: int, z: float = Z_95) -> Tuple[float, float]:
    """(low, high) of the Wilson score interval for `successes` out of `n`
    (fractional for a rate averaged over policies that share the `n` trials)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(
            f'wilson_interval: successes={successes!r} out of n={n!r}; need 0 <= successes <= n, n > 0.'
        )
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # Exact at the ends (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def enough_seeds(seeds: int) -> bool:
    """Whether a comparison over `seeds` seeds may be called shown."""
    return seeds >= MIN_SEEDS


def bootstrap_band(
    values: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over axis 0 (seeds) of `values` (seeds, ...): the
    percentile bootstrap of the mean, seeds resampled with replacement.
    NaNs (a seed without a value at that point) are left out of each mean."""
    values = np.asarray(values, np.float64)
    if values.ndim < 1 or values.shape[0] < 1:
        raise ValueError(f'bootstrap_band: values of shape {values.shape}; need (seeds, ...).')
    if not 0.0 < confidence < 1.0:
        raise ValueError(f'bootstrap_band: confidence={confidence!r} must be in (0, 1).')
    seeds = values.shape[0]
    with warnings.catch_warnings():  # a point where every seed is NaN stays NaN
        warnings.simplefilter('ignore', RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        if seeds < MIN_SEEDS:
            return mean, mean.copy(), mean.copy()
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, seeds, size=(resamples, seeds))
        means = np.nanmean(values[picks], axis=1)  # (resamples, ...)
        tail = 100.0 * (1.0 - confidence) / 2.0
        low, high = np.nanpercentile(means, [tail, 100.0 - tail], axis=0)
    return mean, low, high


def separated(a: Tuple[float, float], b: Tuple[float, float]) -> Optional[int]:
    """+1 if interval `a` lies wholly above `b`, -1 if wholly below, None if
    they overlap."""
    if a[0] > b[1]:
        return 1
    if a[1] < b[0]:
        return -1
    return None
