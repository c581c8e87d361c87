"""`make demo`'s closing summary reads every stage's --json result: the VAE, the training run's audio gap,
the sweep's per-scale comparison (with a missing gain shown as such) and where the comparison page is."""

from __future__ import annotations

from asva_platform.dev.demo import ToyRun, describe
from asva_platform.dev.stack import StackSettings


def _row(value, mean, gain):
    return {"value": value, "mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "shifted": 0.15,
            "win_rate": 0.8, "win_rate_ci_low": 0.7, "win_rate_ci_high": 0.9, "gt": 0.72,
            "gain": gain, "gain_ci_low": None if gain is None else gain - 0.05,
            "gain_ci_high": None if gain is None else gain + 0.05, "num_clips": 48}


def test_summary_names_the_figures_that_show_sync():
    run = ToyRun(
        overrides=[], vae={"psnr_db": 28.2, "psnr_random_init_db": 11.7, "scaling_factor": 0.94},
        preprocess={}, evaluate={},
        train={"run_id": "r1", "final_step": 800,
               "validation": {"val_loss_true": 0.15, "val_loss_other_audio": 0.152, "val_loss_null_audio": 0.153,
                              "val_loss_gap_t": 6.1, "val_audio_win_rate": 0.86}},
        sweep={"experiment": "guidance-scale-toy",
               "comparison": {"param": "eval.audio_guidance_scale", "metric": "Sync", "baseline": 1.0, "best": 8.0,
                              "rows": [_row(1.0, 0.25, 0.0), _row(4.0, 0.37, None), _row(8.0, 0.44, 0.19)]}},
        compare_page="/tmp/compare.html")
    text = describe(run, StackSettings.from_env())
    assert "28.2 dB" in text and "11.7 dB" in text
    assert "paired t 6.1" in text and "86% of windows" in text
    assert "scale    8: Sync 0.440 [0.340, 0.540]" in text and "gain +0.190 [+0.140, +0.240]" in text
    assert "scale    4" in text and "gain n/a" in text
    assert "best scale: 8.0" in text and "/tmp/compare.html" in text
