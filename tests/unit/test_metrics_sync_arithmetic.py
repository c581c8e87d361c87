"""RelSync / AlignSync / IA / IT arithmetic against hand-computed values (paper Eq. 5, 7-11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from asva_model.metrics.avsync import align_prob, alignsync, relsync
from asva_model.metrics.compute import ClipScores, per_class_metrics, summarize
from asva_model.metrics.frechet import frechet_distance


def test_relsync_hand_values():
    # exp(a) / (exp(a) + exp(b)): equal -> 1/2; a = ln 3, b = 0 -> 3/4; a = 0, b = ln 4 -> 1/5
    got = relsync(np.array([0.7, math.log(3.0), 0.0]), np.array([0.7, 0.0, math.log(4.0)]))
    np.testing.assert_allclose(got, [0.5, 0.75, 0.2], rtol=1e-12)


def test_relsync_is_stable_for_large_scores():
    np.testing.assert_allclose(relsync(np.array([1000.0, -1000.0]), np.array([0.0, 0.0])), [1.0, 0.0])


def test_align_prob_hand_values():
    # GT first-frame cosine 0.3. Frames equal to it -> 1/2 each; one frame at 0.3 + ln 3 -> 3/4.
    ia_first = np.array([0.3, 0.3])
    ia_gen = np.array([[0.3, 0.3], [0.3 + math.log(3.0), 0.3]])
    np.testing.assert_allclose(align_prob(ia_gen, ia_first), [0.5, 0.625], rtol=1e-12)


def test_alignsync_is_the_product():
    np.testing.assert_allclose(alignsync(np.array([0.75, 0.5]), np.array([0.625, 0.5])), [0.46875, 0.25])


def test_shape_errors():
    with pytest.raises(ValueError, match="must match"):
        relsync(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(clips, frames\)"):
        align_prob(np.zeros(3), np.zeros(3))


def _hand_scores() -> ClipScores:
    # Two clips, two scored frames each, 1-D FID features and 1-D FVD features.
    return ClipScores(
        {
            "fid_gt": np.array([[[0.0], [2.0]], [[0.0], [2.0]]]),  # mean 1, var 4/3
            "fid_gen": np.array([[[1.0], [3.0]], [[1.0], [3.0]]]),  # mean 2, var 4/3
            "fvd_gt": np.array([[0.0], [2.0]]),  # mean 1, var 2
            "fvd_gen": np.array([[0.0], [4.0]]),  # mean 2, var 8
            "ia": np.array([[0.3 + math.log(3.0), 0.3], [0.2, 0.4]]),
            "it": np.array([[0.1, 0.3], [0.2, 0.2]]),
            "ia_gt_first": np.array([0.3, 0.3]),
            "phi_gt": np.array([0.0, 0.0]),
            "phi_gen": np.array([math.log(3.0), 0.0]),
            "sync": np.array([0.5, 0.1]),
            "sync_lag_s": np.array([-0.2, 0.1]),
            "sync_gt": np.array([0.9, 0.7]),
            "sync_shifted": np.array([0.2, 0.3]),  # clip 0 beats its shifted audio, clip 1 not
        }
    )


def test_summary_of_hand_made_scores():
    out = summarize(_hand_scores(), ["fid", "fvd", "ia", "it", "relsync", "alignsync", "sync"])
    assert out["num_clips"] == 2
    assert out["FID"] == pytest.approx(1.0)  # (1-2)^2 + equal variances
    assert out["FVD"] == pytest.approx(1.0 + (math.sqrt(2) - math.sqrt(8)) ** 2)  # = 1 + 2 = 3
    assert out["FVD"] == pytest.approx(3.0)
    # IA per clip: mean(0.3 + ln 3, 0.3) and 0.3 -> x100 mean
    ia_clip = [(0.6 + math.log(3.0)) / 2, 0.3]
    assert out["IA"] == pytest.approx(100 * sum(ia_clip) / 2)
    assert out["IT"] == pytest.approx(20.0) and out["IT_std"] == pytest.approx(0.0)
    assert out["RelSync"] == pytest.approx(62.5)  # (0.75 + 0.5) / 2 x 100
    assert out["RelSync_std"] == pytest.approx(100 * math.sqrt(2 * 0.125**2))
    # P_Align: clip 0 -> (3/4 + 1/2)/2 = 0.625; clip 1 -> (s(-0.1) + s(0.1))/2 = 0.5 exactly
    assert out["AlignSync"] == pytest.approx(100 * (0.75 * 0.625 + 0.5 * 0.5) / 2)
    assert out["Sync"] == pytest.approx(0.3) and out["Sync_gt"] == pytest.approx(0.8)
    assert out["SyncLag_s"] == pytest.approx(0.15)
    # t(0.975, df=1) = 12.7062 (tables); sd of (0.5, 0.1) = 0.2 sqrt 2, se = 0.2
    assert (out["Sync_ci_low"], out["Sync_ci_high"]) == pytest.approx(
        (0.3 - 12.7062 * 0.2, 0.3 + 12.7062 * 0.2), abs=1e-4
    )
    assert out["Sync_shifted"] == pytest.approx(0.25) and out["Sync_win_rate"] == 0.5
    wilson = binomtest(1, 2).proportion_ci(0.95, method="wilson")
    assert (out["Sync_win_rate_ci_low"], out["Sync_win_rate_ci_high"]) == pytest.approx(
        (wilson.low, wilson.high)
    )


def test_one_clip_has_no_spread_and_ties_with_the_shifted_audio_are_losses():
    scores = ClipScores(
        {
            "sync": np.array([0.0, 0.4]),
            "sync_shifted": np.array([0.0, 0.1]),
            "sync_gt": np.zeros(2),
            "sync_lag_s": np.zeros(2),
        }
    )
    one = summarize(scores.subset([1]), ["sync"])
    assert one["Sync"] == one["Sync_ci_low"] == one["Sync_ci_high"] == pytest.approx(0.4)
    assert (
        one["Sync_win_rate"] == 1.0
        and one["Sync_win_rate_ci_high"] == 1.0
        and one["Sync_win_rate_ci_low"] < 0.25
    )
    # a clip where nothing moves scores 0 with any audio: not a win
    assert summarize(scores.subset([0]), ["sync"])["Sync_win_rate"] == 0.0
    table = per_class_metrics(scores, ["still", "moving"], ["sync"])
    assert table["still"]["Sync_win_rate"] == 0.0 and table["moving"]["Sync_win_rate"] == 1.0


def test_summary_fid_matches_frechet_of_pooled_frames():
    rng = np.random.default_rng(0)
    scores = ClipScores({"fid_gt": rng.normal(size=(3, 4, 2)), "fid_gen": rng.normal(size=(3, 4, 2)) + 1})
    pooled_gt, pooled_gen = scores["fid_gt"].reshape(12, 2), scores["fid_gen"].reshape(12, 2)
    expected = frechet_distance(
        pooled_gt.mean(0),
        np.cov(pooled_gt, rowvar=False),
        pooled_gen.mean(0),
        np.cov(pooled_gen, rowvar=False),
    )
    assert summarize(scores, ["fid"])["FID"] == pytest.approx(expected)


def test_only_the_selected_metrics_are_reported():
    out = summarize(_hand_scores(), ["relsync"])
    assert set(out) == {"num_clips", "RelSync", "RelSync_std"}


def test_missing_scores_and_too_few_clips_are_errors():
    with pytest.raises(KeyError, match="no 'phi_gen' scores"):
        summarize(ClipScores({"ia": np.zeros((1, 2))}), ["relsync"])
    with pytest.raises(ValueError, match="FVD needs at least 2"):
        summarize(_hand_scores().subset([0]), ["fvd"])


def test_per_class_breakdown():
    scores = ClipScores.concat([_hand_scores(), _hand_scores().subset([1])])
    table = per_class_metrics(scores, ["a", "b", "b"], ["fvd", "relsync"])
    assert list(table) == ["a", "b"]
    assert table["a"]["num_clips"] == 1 and "FVD" not in table["a"]  # one clip: FVD undefined, left out
    assert table["a"]["RelSync"] == pytest.approx(75.0)
    assert table["b"]["RelSync"] == pytest.approx(50.0)
    assert table["b"]["FVD"] == pytest.approx(4.0)  # clip 1 twice: GT feature 2, generated 4, no spread
    with pytest.raises(ValueError, match="2 class names for 3 clips"):
        per_class_metrics(scores, ["a", "b"], ["relsync"])


def test_clip_scores_concat_subset_and_save(tmp_path):
    a, b = _hand_scores(), _hand_scores().subset([1, 0])
    both = ClipScores.concat([a, ClipScores(), b])
    assert len(both) == 4
    np.testing.assert_array_equal(both["phi_gen"][2:], a["phi_gen"][::-1])
    path = both.save(tmp_path / "shard")
    loaded = ClipScores.load(path)
    assert set(loaded.arrays) == set(both.arrays)
    np.testing.assert_array_equal(loaded["fid_gt"], both["fid_gt"])
    with pytest.raises(ValueError, match="different scores"):
        ClipScores.concat([a, ClipScores({"ia": np.zeros((1, 2))})])
