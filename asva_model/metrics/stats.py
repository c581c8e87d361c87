"""Interval estimates for per-clip scores: the uncertainty behind a reported mean or rate.

One function per statistic, each returning an :class:`Interval` (estimate, low, high) at ``level``
(two-sided, 95 % by default):

* :func:`mean_interval`: Student-t interval of a mean over clips;
* :func:`wilson_interval`: Wilson score interval of a proportion (a win rate), which stays inside [0, 1]
  and is not degenerate at 0 or n successes, unlike the normal approximation;
* :func:`paired_difference_interval`: t interval of the mean per-clip difference a - b, for two
  conditions scored on the same clips (pairing removes the clip-to-clip spread both share);
* :func:`bootstrap_mean_interval`: percentile bootstrap interval of the mean of a clips x seeds table,
  resampling clips and seeds independently (two-way), so both the clip-to-clip and the seed-to-seed spread
  widen it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float
    """The point estimate (a mean, a proportion, a mean difference); NaN when there is no data."""
    low: float
    """Lower end of the two-sided interval."""
    high: float
    """Upper end of the two-sided interval."""


_EMPTY = Interval(math.nan, math.nan, math.nan)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _finite_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} must be finite, got {x[~np.isfinite(x)][:3]}")
    return x


def mean_interval(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of ``values``; with fewer than 2 values low = high = the mean
    (no spread can be estimated); NaN for none."""
    _check_level(level)
    x = _finite_1d(values, "values")
    if len(x) == 0:
        return _EMPTY
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, mean, mean)
    half = float(sps.t.ppf(0.5 + level / 2, df=len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half)


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> Interval:
    """Wilson score interval of the proportion ``successes / trials``; NaN for no trials."""
    _check_level(level)
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return _EMPTY
    z = float(sps.norm.ppf(0.5 + level / 2))
    p, n = successes / trials, trials
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at p = 0 or 1 the bound is exactly 0 or 1; floating point would leave it a hair inside
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == trials else centre + half
    return Interval(p, low, high)


def paired_difference_interval(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = LEVEL
) -> Interval:
    """Interval of the mean of ``a - b`` over paired items (same clips, same order)."""
    x, y = _finite_1d(a, "a"), _finite_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {len(x)} vs {len(y)}")
    return mean_interval(x - y, level)


BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0
"""Fixed, so the same scores always give the same interval (a re-logged summary does not change)."""


def bootstrap_mean_interval(
    table: Sequence[Sequence[float]] | np.ndarray,
    level: float = LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap interval of the mean of ``table`` (rows: clips, columns: seeds; a 1-d input is one
    seed). Each resample draws rows and columns with replacement, independently, and takes the mean of the
    drawn rows x columns; with one column this is the ordinary bootstrap over clips. Drawing both ways counts
    the two sources of spread (which clips, which generation noise) and errs on the wide side when both are
    small. Fewer than 2 clips: low = high = the mean; NaN for none."""
    _check_level(level)
    x = np.asarray(table, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected a clips x seeds table, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"table must be finite, got {x[~np.isfinite(x)][:3]}")
    if x.size == 0:
        return _EMPTY
    mean = float(x.mean())
    clips, seeds = x.shape
    if clips < 2:
        return Interval(mean, mean, mean)
    rng = np.random.default_rng(seed)
    # The mean of the drawn rows x columns is w_rows . table . w_cols / (clips * seeds), with w the draw counts.
    row_counts = np.stack(
        [np.bincount(r, minlength=clips) for r in rng.integers(0, clips, (resamples, clips))]
    )
    col_counts = np.stack(
        [np.bincount(c, minlength=seeds) for c in rng.integers(0, seeds, (resamples, seeds))]
    )
    means = np.einsum("bi,ij,bj->b", row_counts, x, col_counts) / (clips * seeds)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean, float(low), float(high))
