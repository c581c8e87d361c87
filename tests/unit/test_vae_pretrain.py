"""The toy VAE: trained on synthetic frames it reconstructs where the random init does not; its scaling
factor is measured; it is saved in the diffusers layout the model loader reads, reused on a re-run, and
refused below the PSNR floor; `asva pretrain-vae` wraps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asva_model.build import build_vae
from asva_model.config import ModelConfig, VAEConfig, VAEPretrainConfig
from asva_platform.cli import main as asva
from asva_platform.dev.vae_pretrain import (
    REPORT_FILE,
    frame_psnrs,
    latent_statistics,
    pretrain_vae,
    psnr_db,
    synthetic_frames,
)

CLASSES = ["hammering", "dog_barking"]
SIZE = [32, 32]
MODEL = ModelConfig(vae=VAEConfig(block_out_channels=[16, 32, 32], layers_per_block=1, norm_num_groups=8))
QUICK = VAEPretrainConfig(
    steps=60, batch_size=8, clips=8, frames_per_clip=8, held_out_frames=32, min_psnr_db=0.0
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sd") / "vae"
    return pretrain_vae(MODEL, QUICK, CLASSES, SIZE, out, log=lambda m: None), out


def test_frames_come_from_the_classes_painter_at_the_recipe_size():
    frames = synthetic_frames(CLASSES, 4, 3, SIZE, seed=0)
    assert frames.shape == (12, 3, 32, 32) and 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert float(frames.std()) > 0.05  # real pictures, not a constant
    assert not torch.equal(frames, synthetic_frames(CLASSES, 4, 3, SIZE, seed=1))


def test_training_beats_the_random_init_and_measures_the_latent_shift_and_scale(trained):
    report, out = trained
    assert report.psnr_db > report.psnr_random_init_db + 3.0, report
    vae = build_vae(
        ModelConfig(
            pretrained_sd=str(out.parent),
            vae=VAEConfig(scaling_factor=report.scaling_factor, latents_mean=report.latents_mean),
        )
    )
    held = synthetic_frames(CLASSES, 4, 8, SIZE, seed=QUICK.seed + 7_777)[: QUICK.held_out_frames]
    assert psnr_db(vae, held) == pytest.approx(
        report.psnr_db, abs=1e-3
    )  # the saved weights are the measured ones
    assert report.psnr_min_db == pytest.approx(float(frame_psnrs(vae, held).min()), abs=1e-3)
    assert report.psnr_min_db < report.psnr_db
    assert vae.config.scaling_factor == report.scaling_factor
    assert list(vae.config.latents_mean) == pytest.approx(report.latents_mean)
    shift, scale = latent_statistics(vae, held, QUICK.seed)
    assert report.scaling_factor == pytest.approx(scale, rel=1e-5) and report.latents_mean == pytest.approx(
        shift
    )
    assert json.loads((out / REPORT_FILE).read_text())["psnr_db"] == report.psnr_db
    assert f"model.vae.latents_mean=[{','.join(repr(m) for m in report.latents_mean)}]" in report.overrides()


def test_the_shifted_latents_are_zero_mean_unit_variance_and_invert(trained):
    from asva_model.latents import LatentScaling
    from asva_model.objective import encode_frames, sample_latents

    report, out = trained
    cfg = VAEConfig(scaling_factor=report.scaling_factor, latents_mean=report.latents_mean)
    vae = build_vae(ModelConfig(pretrained_sd=str(out.parent), vae=cfg))
    held = synthetic_frames(CLASSES, 4, 8, SIZE, seed=QUICK.seed + 7_777)[: QUICK.held_out_frames]
    mean, std = encode_frames(vae, held.unsqueeze(2))  # (N, 3, 1, H, W): one frame per "clip"
    scaling = LatentScaling.of(cfg)
    z = sample_latents(mean, std, torch.Generator().manual_seed(QUICK.seed), scaling)
    assert z.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-4 and float(z.std()) == pytest.approx(1.0, abs=1e-3)
    unshifted = sample_latents(
        mean, std, torch.Generator().manual_seed(QUICK.seed), LatentScaling(scaling.scale)
    )
    assert unshifted.mean(dim=(0, 2, 3, 4)).abs().max() > 0.05  # what the shift takes away
    torch.testing.assert_close(scaling.to_vae(scaling.to_diffusion(mean)), mean)


def test_a_config_that_disagrees_with_the_saved_shift_is_refused(trained):
    from asva_model.weights import WeightsError

    report, out = trained
    wrong = VAEConfig(scaling_factor=report.scaling_factor, latents_mean=[0.0] * 4)
    with pytest.raises(WeightsError, match="latents_mean"):
        build_vae(ModelConfig(pretrained_sd=str(out.parent), vae=wrong))


def test_a_rerun_with_the_same_settings_reuses_the_vae(trained):
    report, out = trained
    again = pretrain_vae(MODEL, QUICK, CLASSES, SIZE, out, log=lambda m: None)
    assert again.reused and again.psnr_db == report.psnr_db and again.seconds == 0.0


def test_below_the_psnr_floor_nothing_is_saved(tmp_path):
    cfg = VAEPretrainConfig(
        steps=1, batch_size=2, clips=2, frames_per_clip=2, held_out_frames=4, min_psnr_db=60.0
    )
    with pytest.raises(ValueError, match="min_psnr_db.*< 60"):
        pretrain_vae(MODEL, cfg, CLASSES, SIZE, tmp_path / "vae", log=lambda m: None)
    assert not (tmp_path / "vae").exists()


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    code = asva(
        [
            "pretrain-vae",
            "--config",
            str(Path(__file__).resolve().parents[2] / "configs" / "toy.yaml"),
            "--out",
            str(tmp_path),
            "vae_pretrain.steps=0",
        ]
    )
    assert code != 0
    assert "vae_pretrain.steps" in capsys.readouterr().err
