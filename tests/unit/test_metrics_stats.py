"""Interval helpers against scipy's own intervals, textbook values, their coverage and their edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from asva_model.metrics.stats import (
    bootstrap_mean_interval,
    mean_interval,
    paired_difference_interval,
    wilson_interval,
)


def test_mean_interval_matches_scipy_and_the_textbook_t_quantile():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    iv = mean_interval(values)
    # t(0.975, df=4) = 2.776445 (tables); sd = sqrt(2.5), se = sd / sqrt(5)
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), abs=1e-5)
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 57):
        x = rng.normal(0.3, 0.2, size=n)
        ref = sps.ttest_1samp(x, 0.0).confidence_interval(0.9)
        got = mean_interval(x, level=0.9)
        assert (got.low, got.high) == pytest.approx((ref.low, ref.high), rel=1e-10)


def test_mean_interval_edge_cases():
    one = mean_interval([0.42])
    assert one.estimate == one.low == one.high == 0.42  # no spread from one clip: the mean itself
    flat = mean_interval([0.2] * 6)
    assert flat.low == pytest.approx(0.2) and flat.high == pytest.approx(0.2)
    assert all(math.isnan(v) for v in (mean_interval([]).estimate, mean_interval([]).low))
    with pytest.raises(ValueError, match="must be finite"):
        mean_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="level"):
        mean_interval([0.1, 0.2], level=1.0)


def test_the_t_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = [
        (iv.low <= 0.5 <= iv.high)
        for iv in (mean_interval(rng.normal(0.5, 1.0, size=6)) for _ in range(4000))
    ]
    assert 0.94 <= np.mean(covered) <= 0.96


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (7, 8), (51, 120)])
def test_wilson_matches_scipy(k, n):
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    iv = wilson_interval(k, n)
    assert iv.estimate == pytest.approx(k / n)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert 0.0 <= iv.low <= iv.estimate <= iv.high <= 1.0


def test_wilson_edge_cases():
    # all or none: the bound on that side is exact, the other stays informative (unlike p +- z sqrt(p(1-p)/n))
    assert wilson_interval(10, 10).high == 1.0 and wilson_interval(10, 10).low < 0.75
    assert wilson_interval(0, 10).low == 0.0 and wilson_interval(0, 10).high > 0.25
    assert math.isnan(wilson_interval(0, 0).estimate)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_wilson_coverage_from_the_binomial_distribution():
    """Exact coverage (no simulation): the binomial probability of every k whose interval holds p."""
    for n, p in ((20, 0.3), (40, 0.5), (60, 0.8)):
        k = np.arange(n + 1)
        covered = [wilson_interval(int(i), n).low <= p <= wilson_interval(int(i), n).high for i in k]
        coverage = float(sps.binom.pmf(k, n, p)[covered].sum())
        assert 0.92 <= coverage <= 0.98, (n, p, coverage)


def test_paired_interval_is_the_interval_of_the_differences_and_narrower_than_unpaired():
    rng = np.random.default_rng(2)
    clip_difficulty = rng.normal(0.0, 0.3, size=12)  # shared by both conditions
    base = clip_difficulty + rng.normal(0.0, 0.02, size=12)
    better = clip_difficulty + 0.05 + rng.normal(0.0, 0.02, size=12)
    paired = paired_difference_interval(better, base)
    direct = mean_interval(better - base)
    assert (paired.estimate, paired.low, paired.high) == pytest.approx(
        (direct.estimate, direct.low, direct.high)
    )
    assert paired.low > 0  # the gain shows once clips are paired ...
    a, b = mean_interval(better), mean_interval(base)
    assert a.low < b.high  # ... while the two means' own intervals overlap
    same = paired_difference_interval(base, base)
    assert same.estimate == same.low == same.high == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference_interval([1.0, 2.0], [1.0])


def _loop_bootstrap(table: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The two-way bootstrap written out draw by draw: the same generator calls, then an explicit mean."""
    rng = np.random.default_rng(seed)
    clips, seeds = table.shape
    rows, cols = rng.integers(0, clips, (resamples, clips)), rng.integers(0, seeds, (resamples, seeds))
    return np.array([table[np.ix_(r, c)].mean() for r, c in zip(rows, cols)])


def test_bootstrap_is_the_mean_over_drawn_clips_and_seeds():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(9, 3))
    iv = bootstrap_mean_interval(table, resamples=500, seed=7)
    means = _loop_bootstrap(table, 500, 7)
    assert iv.estimate == pytest.approx(table.mean())
    assert (iv.low, iv.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-12)
    assert bootstrap_mean_interval(table, resamples=500, seed=7) == iv  # fixed seed: the same interval


def test_bootstrap_with_one_seed_is_the_clip_bootstrap_and_near_the_t_interval():
    x = np.random.default_rng(1).normal(0.5, 0.1, size=200)
    boot, t = bootstrap_mean_interval(x), mean_interval(x)
    assert boot == bootstrap_mean_interval(x[:, None])
    assert boot.low == pytest.approx(t.low, abs=0.003) and boot.high == pytest.approx(t.high, abs=0.003)


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(2)
    clips = rng.normal(0.0, 0.1, size=(40, 1))
    calm = clips + rng.normal(0.0, 0.01, size=(40, 3))
    noisy = (
        clips + rng.normal(0.0, 0.2, size=(1, 3)) + rng.normal(0.0, 0.01, size=(40, 3))
    )  # a shared seed effect
    width = [(iv.high - iv.low) for iv in map(bootstrap_mean_interval, (calm, noisy))]
    assert width[1] > 2 * width[0]


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(300):
        table = rng.normal(1.0, 1.0, size=(30, 1)) + rng.normal(0.0, 0.3, size=(30, 3))
        iv = bootstrap_mean_interval(table, resamples=1000, seed=int(rng.integers(1 << 30)))
        covered += iv.low <= 1.0 <= iv.high
    assert 0.89 <= covered / 300 <= 0.99


def test_bootstrap_edge_cases():
    assert bootstrap_mean_interval([[0.3, 0.5]]) == bootstrap_mean_interval([[0.3, 0.5]])
    one = bootstrap_mean_interval([[0.3, 0.5]])
    assert one.estimate == one.low == one.high == pytest.approx(0.4)
    assert math.isnan(bootstrap_mean_interval(np.zeros((0, 2))).estimate)
    with pytest.raises(ValueError, match="must be finite"):
        bootstrap_mean_interval([[0.1, float("inf")], [0.2, 0.3]])
    with pytest.raises(ValueError, match="clips x seeds"):
        bootstrap_mean_interval(np.zeros((2, 2, 2)))
