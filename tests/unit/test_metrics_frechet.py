"""Fréchet distance and feature statistics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from asva_model.metrics.frechet import (
    FeatureStats,
    frechet_distance,
    frechet_distance_of_features,
    frechet_distance_of_stats,
)


def test_one_dimensional_closed_form():
    # (mu1-mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (1-3)^2 + 4 + 9 - 2*6 = 5
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])
    ) == pytest.approx(5.0)


def test_scalars_are_accepted_as_one_dimensional():
    assert frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(5.0)


def test_diagonal_closed_form():
    # per dim: (mu1-mu2)^2 + (std1-std2)^2 -> (1 + 1) + (0 + 0) + (4 + 4) = 10
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(10.0)


def test_rotation_invariance_of_the_diagonal_case():
    # Rotating both Gaussians by the same orthogonal Q (non-diagonal covariances) keeps the distance 10.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    d = frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert d == pytest.approx(10.0, rel=1e-9)


def test_identical_gaussians_are_at_distance_zero():
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_shifted_samples_give_squared_shift():
    x = np.random.default_rng(2).normal(size=(40, 5))
    shift = np.array([1.0, -2.0, 0.0, 0.5, 3.0])
    assert frechet_distance_of_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_scaled_samples_give_trace_of_covariance():
    # S2 = 4 S1 and equal means: Tr(S + 4S - 2 * 2S) = Tr(S)
    x = np.random.default_rng(3).normal(size=(30, 3))
    x = x - x.mean(axis=0)
    assert frechet_distance_of_features(x, 2 * x) == pytest.approx(
        np.trace(np.cov(x, rowvar=False)), rel=1e-9
    )


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(mat)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_rank_deficient_covariances_match_an_independent_formula():
    # Fewer samples than dims: S1 S2 is singular and scipy's sqrtm returns a complex result.
    # Tr (S1 S2)^(1/2) equals the nuclear norm of S1^(1/2) S2^(1/2), computed here by eigh + SVD.
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 32)), rng.normal(size=(6, 32)) + 0.3
    mu1, mu2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    tr_sqrt = np.linalg.svd(_psd_sqrt(s1) @ _psd_sqrt(s2), compute_uv=False).sum()
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-5)


def test_rank_deficient_identical_sets_are_near_zero():
    x = np.random.default_rng(5).normal(size=(3, 16))
    assert abs(frechet_distance_of_features(x, x)) < 1e-5


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mean vectors differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariances must both be 2x2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="sigma2 has non-finite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))


def test_stats_match_numpy_mean_and_cov():
    x = np.random.default_rng(6).normal(loc=3.0, size=(25, 4))
    stats = FeatureStats.of(x)
    assert stats.count == 25 and stats.dim == 4
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-10)


def test_streaming_and_merging_equal_one_shot():
    x = np.random.default_rng(7).normal(loc=100.0, scale=0.01, size=(37, 3))  # large mean, tiny spread
    streamed = FeatureStats.of([x[:5], x[5:6], x[6:30], x[30:]])
    merged = FeatureStats.of(x[:20]).merge(FeatureStats.of(x[20:])).merge(FeatureStats())
    for stats in (streamed, merged):
        assert stats.count == 37
        np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-8)
    assert frechet_distance_of_stats(streamed, merged) == pytest.approx(0.0, abs=1e-12)


def test_stats_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        _ = FeatureStats.of(np.zeros((1, 3))).cov
    with pytest.raises(ValueError, match="no features"):
        _ = FeatureStats().mean
    with pytest.raises(ValueError, match="feature dim 2 != accumulated dim 3"):
        FeatureStats.of(np.zeros((2, 3))).update(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(n, dim\)"):
        FeatureStats().update(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats().update(np.array([[np.nan]]))
