"""The intervals the reproductions report: Wilson for rates, bootstrap for curves."""

import numpy as np
import pytest

from insertion_jax.training import plots, stats


@pytest.mark.parametrize(
    'successes, n, low, high',
    [  # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got = stats.wilson_interval(successes, n)
    np.testing.assert_allclose(got, (low, high), atol=5e-5)


def test_wilson_interval_stays_in_the_unit_interval_and_covers():
    assert stats.wilson_interval(25, 25)[1] == 1.0
    assert stats.wilson_interval(0, 25)[0] == 0.0
    # Coverage: 95% intervals of 25 Bernoulli(0.6) trials cover 0.6 about
    # 95% of the time (the normal approximation's falls to about 90% here).
    rng = np.random.default_rng(0)
    hits = rng.binomial(25, 0.6, size=4000)
    covered = np.mean(
        [lo <= 0.6 <= hi for lo, hi in map(lambda k: stats.wilson_interval(int(k), 25), hits)]
    )
    assert 0.93 <= covered <= 0.98, covered
    with pytest.raises(ValueError, match='successes=26 out of n=25'):
        stats.wilson_interval(26, 25)


def test_bootstrap_band_covers_the_true_mean_and_has_no_width_on_one_seed():
    rng = np.random.default_rng(1)
    trials = 300
    covered = 0
    for t in range(trials):
        seeds = rng.normal(0.5, 0.1, size=(8, 1))
        _, low, high = stats.bootstrap_band(seeds, resamples=500, seed=t)
        covered += bool(low[0] <= 0.5 <= high[0])
    # The percentile bootstrap undercovers a little at 8 seeds.
    assert 0.85 <= covered / trials <= 0.99, covered / trials
    one = np.array([[0.2, 0.4]])
    mean, low, high = stats.bootstrap_band(one)
    np.testing.assert_array_equal(mean, [0.2, 0.4])
    np.testing.assert_array_equal(low, mean)
    np.testing.assert_array_equal(high, mean)
    assert not stats.enough_seeds(1) and stats.enough_seeds(2)


def test_bootstrap_band_skips_missing_values_and_plots_clip_percentages():
    values = np.array([[1.0, np.nan], [3.0, 2.0]])
    mean, low, high = stats.bootstrap_band(values)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    assert low[0] >= 1.0 and high[0] <= 3.0 and low[1] == high[1] == 2.0
    _, low, high = plots.mean_and_band(np.array([[0.0, 100.0], [0.0, 100.0], [10.0, 100.0]]))
    assert np.all(low >= 0.0) and np.all(high <= 100.0)


def test_separated_says_which_interval_is_higher_or_that_they_overlap():
    assert stats.separated((0.6, 0.9), (0.2, 0.5)) == 1
    assert stats.separated((0.2, 0.5), (0.6, 0.9)) == -1
    assert stats.separated((0.2, 0.6), (0.5, 0.9)) is None
