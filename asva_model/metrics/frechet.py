"""Fréchet distance between Gaussians fitted to network features (FID, FVD) and streaming feature statistics.

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

computed with scipy's ``sqrtm`` as pytorch-fid and the paper's ``dists.py`` do, so values are comparable.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
from scipy import linalg


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    A numerically singular product S1 S2 (common when there are fewer samples than feature dims)
    is retried with ``eps`` added to both diagonals; a tiny imaginary part from rounding is dropped,
    a large one raises ``ValueError``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"covariances must both be {mu1.shape[0]}x{mu1.shape[0]}, got {sigma1.shape} and {sigma2.shape}"
        )
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has non-finite values (NaN/inf features?)")

    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(S1 S2) has a large imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sqrtm(mat: np.ndarray) -> np.ndarray:
    # scipy warns (LinAlgWarning) on singular input and still returns its best estimate; the caller
    # decides what to do with non-finite or complex results, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(mat)


class FeatureStats:
    """Running mean and unbiased covariance of feature vectors; mergeable across workers.

    Uses the pairwise update of Chan et al. (count, mean, centred scatter) in float64, so streaming
    batches gives the same result as ``np.mean`` / ``np.cov(rowvar=False)`` on all rows at once.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None if dim is None else np.zeros(dim)
        self._scatter: np.ndarray | None = None if dim is None else np.zeros((dim, dim))

    @property
    def dim(self) -> int | None:
        return None if self._mean is None else int(self._mean.shape[0])

    def update(self, features: np.ndarray) -> FeatureStats:
        """Add a batch of features shaped (n, dim) (a torch tensor is accepted too)."""
        x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (n, dim), got shape {x.shape}")
        if x.shape[0] == 0:
            return self
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN/inf")
        mean = x.mean(axis=0)
        centred = x - mean
        return self._merge(x.shape[0], mean, centred.T @ centred)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Fold another accumulator into this one (e.g. results from parallel workers)."""
        if other.count == 0:
            return self
        return self._merge(other.count, other._mean, other._scatter)

    def _merge(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> FeatureStats:
        if self._mean is None or self.count == 0:
            if self._mean is not None and self._mean.shape != mean_b.shape:
                raise ValueError(f"feature dim {mean_b.shape[0]} != accumulated dim {self._mean.shape[0]}")
            self.count, self._mean, self._scatter = n_b, mean_b.copy(), scatter_b.copy()
            return self
        if mean_b.shape != self._mean.shape:
            raise ValueError(f"feature dim {mean_b.shape[0]} != accumulated dim {self._mean.shape[0]}")
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self._mean
        self._scatter = self._scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self._mean = self._mean + delta * (n_b / n)
        self.count = n
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no features accumulated")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased (n - 1) covariance, as ``np.cov(features, rowvar=False)``."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return self._scatter / (self.count - 1)

    @classmethod
    def of(cls, batches: np.ndarray | Iterable[np.ndarray]) -> FeatureStats:
        """Statistics of one (n, dim) array or of an iterable of such batches."""
        stats = cls()
        if isinstance(batches, np.ndarray) or hasattr(batches, "detach"):
            return stats.update(batches)
        for batch in batches:
            stats.update(batch)
        return stats


def frechet_distance_of_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between the Gaussians fitted to two feature accumulators."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two feature sets shaped (n, dim) (the paper's ``dists.frechet_distance``)."""
    return frechet_distance_of_stats(FeatureStats.of(a), FeatureStats.of(b))
