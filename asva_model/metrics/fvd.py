"""FVD: Fréchet distance between I3D features of whole GT and generated clips (all 12 frames).

As the paper's code: every frame resized bicubic (antialiased) to 224x224, mapped to [-1, 1],
clips laid out (B, 3, T, 224, 224) and passed to StyleGAN-V's TorchScript I3D with
``rescale=False, resize=False, return_features=True``. One feature vector per clip.
"""

from __future__ import annotations

import numpy as np
import torch

from asva_model.metrics.frechet import frechet_distance_of_features
from asva_model.metrics.networks import VideoFeatureNet
from asva_model.metrics.networks.preprocess import resize_bicubic, run_batched, to_minus_one_one

FVD_IMAGE_SIZE = 224


def fvd_inputs(clips: torch.Tensor, size: int = FVD_IMAGE_SIZE) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1] -> (B, 3, T, size, size) in [-1, 1]."""
    b, t = clips.shape[:2]
    frames = to_minus_one_one(resize_bicubic(clips.flatten(0, 1), size))
    return frames.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4).contiguous()


def fvd_features(
    clips: torch.Tensor,
    net: VideoFeatureNet,
    size: int = FVD_IMAGE_SIZE,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Features (B, D) of clips (B, T, 3, H, W) in [0, 1]; ``batch_size`` counts frames per forward."""
    clips_per_batch = max(1, batch_size // max(1, clips.shape[1]))
    return run_batched(lambda b: net(fvd_inputs(b, size)), clips, clips_per_batch, device).numpy()


def fvd(gt_features: np.ndarray, gen_features: np.ndarray) -> float:
    """FVD of two (clips, D) feature sets; needs at least 2 clips per side."""
    return frechet_distance_of_features(np.asarray(gt_features), np.asarray(gen_features))
