"""`make demo`'s closing summary reads every stage's --json result: the VAE, the training run's audio gap,
the sweep's per-scale comparison (with a missing gain shown as such), where the comparison page is, and the
MLflow links it prints and writes for `make ui-check`."""

from __future__ import annotations

import json

from asva_platform.dev.demo import CONFIG, LINK_LABELS, REPO, SWEEP, ToyRun, describe, links_of, write_links
from asva_platform.dev.stack import StackSettings


def _row(value, mean, gain):
    return {
        "value": value,
        "seeds": 2,
        "mean": mean,
        "boot_ci_low": mean - 0.12,
        "boot_ci_high": mean + 0.11,
        "ci_low": mean - 0.1,
        "ci_high": mean + 0.1,
        "shifted": 0.15,
        "win_rate": 0.8,
        "win_rate_ci_low": 0.7,
        "win_rate_ci_high": 0.9,
        "gt": 0.72,
        "gain": gain,
        "gain_ci_low": None if gain is None else gain - 0.05,
        "gain_ci_high": None if gain is None else gain + 0.05,
        "num_clips": 48,
    }


UI = "http://127.0.0.1:5100/#/experiments"
SWEEP_LINKS = {
    "runs": f"{UI}/2/runs",
    "parent": f"{UI}/2/runs/p1",
    "plot": f"{UI}/2/runs/p1/artifactPath/plots/x.png",
    "settings": f"{UI}/2/runs/p1/artifactPath/summary/settings.json",
}


PICTURE = {
    "frame0_psnr": 31.4,
    "frame0_psnr_min": 27.2,
    "colour_drift_R": 0.4,
    "colour_drift_G": -1.2,
    "colour_drift_B": 1.9,
    "colour_error_R": -0.5,
    "colour_error_G": 0.3,
    "colour_error_B": 2.5,
    "lead_s": -0.02,
}


def _toy_run() -> ToyRun:
    return ToyRun(
        overrides=[],
        vae={"psnr_db": 28.2, "psnr_random_init_db": 11.7, "scaling_factor": 0.94},
        preprocess={},
        evaluate={"mlflow_url": f"{UI}/3/runs/e1/artifactPath/eval/x/per_class.json"},
        train={
            "run_id": "r1",
            "final_step": 800,
            "mlflow_url": f"{UI}/1/runs/r1",
            "validation": {
                "val_loss_true": 0.15,
                "val_loss_other_audio": 0.152,
                "val_loss_null_audio": 0.153,
                "val_loss_gap_t": 6.1,
                "val_audio_win_rate": 0.86,
            },
        },
        sweep={
            "experiment": "guidance-scale-toy",
            "links": SWEEP_LINKS,
            "comparison": {
                "param": "generate.audio_guidance_scale",
                "metric": "Sync",
                "baseline": 1.0,
                "best": 8.0,
                "rows": [
                    _row(1.0, 0.25, 0.0),
                    _row(4.0, 0.37, None),
                    {**_row(8.0, 0.44, 0.19), **PICTURE},
                ],
                "per_class": [{"class": "dog_barking", "best": 8.0, "worst": 1.0}],
                "lags": {"8.0": {"generated": {"-0.16": 3, "0": 45}, "gt": {"0": 48}}},
            },
        },
        compare_page="/tmp/compare.html",
        compare={"mlflow_url": f"{UI}/2/runs/p1/artifactPath/compare/index.html"},
        stage_seconds={"train": 600.0},
    )


def test_summary_names_the_figures_that_show_sync(tmp_path):
    run = _toy_run()
    text = describe(run, StackSettings.from_env())
    assert (
        "picture: frame 0 31.4 dB (worst 27.2) against the conditioning frame; colour drift beyond the GT's "
        "(RGB /255) +0.4 -1.2 +1.9; motion leads the GT's by -0.020 s" in text
    )
    assert text.count("picture:") == 1  # rows without the picture metric print none
    assert "28.2 dB" in text and "11.7 dB" in text
    assert "paired t 6.1" in text and "86% of windows" in text
    assert (
        "scale    8: Sync 0.440 [0.320, 0.550]" in text and "gain +0.190 [+0.140, +0.240]" in text
    )  # bootstrap CI
    assert "clips x 2 seed(s)" in text and "dog_barking: best scale 8.0, worst 1.0" in text
    assert "scale    4" in text and "gain n/a" in text
    assert "best scale: 8.0" in text and "/tmp/compare.html" in text
    links = links_of(run.sweep, run.compare, run.train, run.evaluate)
    assert list(links) == list(LINK_LABELS)  # every view, in the printed order
    for key, url in links.items():
        assert f"  {LINK_LABELS[key]}: {url}" in text
    assert json.loads(write_links(links, tmp_path / "demo").read_text()) == links
    assert list(links_of(run.sweep, {})) == [
        "runs",
        "parent",
        "plot",
        "settings",
    ]  # a stage without a link: left out


def test_the_learning_benchmark_reports_the_picture_and_timing_beside_its_targets():
    from bench.bench_learn import TARGETS, summarize, table

    out = summarize(_toy_run(), wall_s=1200.0, cpu_s=2000.0)
    assert out["frame0_psnr_db"]["8.0"] == [31.4, 27.2]
    assert out["colour_drift"]["8.0"] == [0.4, -1.2, 1.9] and out["colour_error"]["8.0"] == [-0.5, 0.3, 2.5]
    assert out["colour_drift"]["1.0"] == [None, None, None]
    assert out["win_rate_by_scale"] == {"1.0": 0.8, "4.0": 0.8, "8.0": 0.8}
    assert out["lag_s"]["8.0"]["generated"] == {"-0.16": 3, "0": 45} and out["lead_s"]["8.0"] == -0.02
    text = table(out)
    assert "frame 0 dB @ 8.0 (min)" in text and "31.400 (27.200)" in text
    assert f">= {TARGETS['frame0_psnr_db']} ({TARGETS['frame0_psnr_min_db']})" in text
    assert "colour_drift RGB @ 8.0" in text and "+0.4 -1.2 +1.9" in text
    assert f"win rate @ scale 1.0{' ' * 8}" in text and f">= {TARGETS['win_rate_scale_1']}" in text
    assert f">= {TARGETS['sync_best']} (best)" in text


def test_the_demo_finds_its_recipe_and_sweep():
    # the demo chdirs to REPO and submits jobs from there (a wrong REPO sent every stage to a missing file)
    assert (REPO / CONFIG).is_file() and (REPO / SWEEP).is_file() and (REPO / "jobs" / "train.py").is_file()
