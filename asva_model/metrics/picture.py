"""Weights-free picture checks of an image-to-video model: does the video keep its conditioning picture?

Per clip, with every frame in [0, 1] and colours reported in 1/255 steps:

* ``frame0_psnr``: PSNR (dB) of the generated frame 0 against the ground truth's frame 0, the conditioning
  image. AVSyncD's frame 0 is the decoded condition latent, so this is the VAE's (and the mp4's) fidelity;
* ``colour_error``: per channel, the clip's mean colour minus the ground truth's (mean over all frames);
* ``colour_drift``: per channel, how far the later frames move from frame 0 in mean colour (median over
  frames 1.. of frame colour minus frame-0 colour), minus the same for the ground truth: what the model adds
  to the scene's own change. A video that turns purple as it plays has a positive blue and negative green
  drift here.
"""

from __future__ import annotations

import numpy as np
import torch

CHANNELS = ("R", "G", "B")


def mean_colours(clips: torch.Tensor) -> torch.Tensor:
    """(n, F, 3, H, W) in [0, 1] -> (n, F, 3) mean colour of each frame in 1/255 steps."""
    return clips.float().mean(dim=(3, 4)) * 255.0


def frame0_psnr(gt: torch.Tensor, gen: torch.Tensor) -> np.ndarray:
    """(n,) PSNR in dB of each generated frame 0 against the ground truth's (capped at 100 dB when equal)."""
    mse = (gen[:, 0].float() - gt[:, 0].float()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).double().numpy()


def colour_drift(clips: torch.Tensor) -> torch.Tensor:
    """(n, 3): median over frames 1.. of each frame's mean colour minus frame 0's, in 1/255 steps."""
    colours = mean_colours(clips)
    return (colours[:, 1:] - colours[:, :1]).median(dim=1).values


def picture_scores(gt: torch.Tensor, gen: torch.Tensor) -> dict[str, np.ndarray]:
    """The per-clip arrays of the ``picture`` metric for stacked clips (n, F, 3, H, W) in [0, 1]."""
    return {
        "frame0_psnr": frame0_psnr(gt, gen),
        "colour_error": (mean_colours(gen) - mean_colours(gt)).mean(dim=1).double().numpy(),
        "colour_drift": (colour_drift(gen) - colour_drift(gt)).double().numpy(),
    }
