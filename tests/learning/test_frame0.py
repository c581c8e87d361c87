"""Generated frame 0 keeps the conditioning picture (issue 28: 27.9 dB on average, 18.3 dB on the worst clip, and
about 7/255 off in colour, before the fix).

Frame 0 of a generated video is the conditioning image encoded to a *sampled* latent (as the authors do), scaled
and shifted into the diffusion's space and decoded back (``AVSyncPipeline.encode_image`` / ``decode_latents``):
its error is the VAE's. The test trains the toy VAE with the recipe's settings (configs/toy.yaml
``vae_pretrain``, fewer steps) and sends frame 0 of held-out synthetic clips through that path. The control
trains the same VAE for the same steps with the settings it had before: 96 clips x 24 frames and a KL weight of
1e-6, whose posterior noise (std ~0.45 in the sampled latent) and palette overfit are what cost the worst
clips their picture; it misses the worst-clip bound, so the test fails if that error returns.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL

from asva_model.pipeline import AVSyncPipeline
from asva_platform.dev.vae_pretrain import HELD_OUT_SEED_OFFSET, pretrain_vae, synthetic_frames
from asva_platform.experiment import load_experiment

REPO = Path(__file__).resolve().parents[2]
STEPS = 1000
HELD_OUT_CLIPS = 96
MIN_MEAN_DB, MIN_WORST_DB, MAX_COLOUR_ERROR = 27.0, 22.5, 4.0
"""Bounds at STEPS steps, between the recipe (measured: mean 28.6 dB, worst 24.0 dB, colour error 2.3/255; its
3,000 steps reach ~32 / ~29 dB) and the settings before (27.1 dB, worst 20.4 dB, colour error 5.6/255). Colour
error: mean |frame 0's mean colour - the condition's| over clips x channels, in 1/255."""


@dataclasses.dataclass
class Frame0:
    psnr_db: torch.Tensor
    """(clips,) generated frame 0 against the conditioning image."""
    colour_error: torch.Tensor
    """(clips, 3) |mean colour of frame 0 - the condition's|, in 1/255."""


def frame0_through_the_pipeline(tmp_path: Path, name: str, **pretrain) -> Frame0:
    exp = load_experiment(str(REPO / "configs" / "toy.yaml"))
    cfg = dataclasses.replace(exp.vae_pretrain, steps=STEPS, min_psnr_db=0.0, **pretrain)
    classes, size = list(exp.dataset.classes), list(exp.sampling.image_size)
    folder = tmp_path / name
    pretrain_vae(exp.model, cfg, classes, size, folder, log=lambda *_: None)
    vae = AutoencoderKL.from_pretrained(folder).eval()
    # frame 0 of clips no training frame came from (another synthetic seed than the VAE's held-out set too)
    condition = synthetic_frames(classes, HELD_OUT_CLIPS, 1, size, cfg.seed + 2 * HELD_OUT_SEED_OFFSET)
    pipe = SimpleNamespace(vae=vae, device=torch.device("cpu"))  # the pipeline's own encode / decode
    latent = AVSyncPipeline.encode_image(pipe, condition, torch.Generator().manual_seed(0))
    frame0 = AVSyncPipeline.decode_latents(pipe, latent[:, :, None])[:, 0]
    mse = (frame0 - condition).pow(2).flatten(1).mean(dim=1)
    colour = (frame0.mean(dim=(2, 3)) - condition.mean(dim=(2, 3))).abs() * 255
    return Frame0(10 * torch.log10(1 / mse.clamp_min(1e-12)), colour)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Frame0:
    return frame0_through_the_pipeline(tmp_path_factory.mktemp("vae"), "recipe")


def test_the_recipes_frame_0_keeps_the_conditioning_picture(recipe):
    assert float(recipe.psnr_db.mean()) >= MIN_MEAN_DB, recipe.psnr_db.mean()
    assert float(recipe.psnr_db.min()) >= MIN_WORST_DB, recipe.psnr_db.min()
    assert float(recipe.colour_error.mean()) <= MAX_COLOUR_ERROR, recipe.colour_error.mean(dim=0)


# The control trains a second VAE (~4 min on a 2-core box): run by `make test-all`, not in CI's `make test`
@pytest.mark.slow
def test_control_the_earlier_vae_settings_lose_the_worst_clips_picture(tmp_path):
    before = frame0_through_the_pipeline(
        tmp_path, "before", clips=96, frames_per_clip=24, kl_weight=1e-6, final_lr_fraction=1.0
    )
    assert float(before.psnr_db.min()) < MIN_WORST_DB, before.psnr_db.min()
    assert float(before.colour_error.mean()) > MAX_COLOUR_ERROR, before.colour_error.mean(dim=0)
