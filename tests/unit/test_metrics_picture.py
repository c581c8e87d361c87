"""The picture metric measures what a person sees go wrong: frame 0 off its conditioning image, and later
frames changing colour beyond what the ground truth's scene does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asva_model.metrics.compute import ClipScores, summarize
from asva_model.metrics.picture import picture_scores


@pytest.fixture()
def clips():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(6, 12, 3, 8, 8, generator=g) * 0.5 + 0.25
    gt[:, 6:, 0] += 0.1  # the scene itself turns redder half-way: that is not the model's drift
    return gt


def test_a_copy_of_the_ground_truth_has_no_error_and_no_drift(clips):
    s = picture_scores(clips, clips.clone())
    assert np.all(s["frame0_psnr"] >= 99)
    assert np.allclose(s["colour_error"], 0) and np.allclose(s["colour_drift"], 0)


def test_later_frames_turning_purple_show_as_drift_and_error_but_not_as_frame0_error(clips):
    gen = clips.clone()
    gen[:, 1:, 1] -= 8 / 255
    gen[:, 1:, 2] += 10 / 255
    out = summarize(ClipScores(picture_scores(clips, gen)), ["picture"])
    assert out["ColourDrift_R"] == pytest.approx(0, abs=1e-4)
    assert out["ColourDrift_G"] == pytest.approx(-8, abs=1e-3)
    assert out["ColourDrift_B"] == pytest.approx(10, abs=1e-3)
    assert out["ColourError_B"] == pytest.approx(10 * 11 / 12, abs=1e-3)  # 11 of 12 frames are off
    assert out["ColourDrift_B_ci_low"] <= 10 <= out["ColourDrift_B_ci_high"]
    assert out["Frame0_PSNR_min"] >= 99


def test_frame0_psnr_is_the_conditioning_frames_and_reports_the_worst_clip(clips):
    gen = clips.clone()
    gen[0, 0] += 0.1  # one clip's frame 0 off by 0.1 everywhere: 20 dB
    gen[1:, 0] += 0.01  # the others' by 0.01: 40 dB
    gen[:, 1:] += 0.3  # later frames do not count
    out = summarize(ClipScores(picture_scores(clips, gen)), ["picture"])
    assert out["Frame0_PSNR_min"] == pytest.approx(20, abs=1e-3)
    assert out["Frame0_PSNR"] == pytest.approx((20 + 5 * 40) / 6, abs=1e-3)
    assert out["Frame0_PSNR_ci_low"] < out["Frame0_PSNR"] < out["Frame0_PSNR_ci_high"]
