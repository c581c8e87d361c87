"""FID: Fréchet distance between FID-Inception pool features of GT and generated frames 2..12.

As the paper's code: frames resized bicubic (antialiased) to 229x229 -- not Inception's usual 299 --
mapped to [-1, 1], and fed straight to the network (no internal resize). All frames 2..12 of all clips
are pooled into one Gaussian per side (450 clips x 11 frames on AVSync15).
"""

from __future__ import annotations

import numpy as np
import torch

from asva_model.metrics.frechet import frechet_distance_of_features
from asva_model.metrics.networks import ImageFeatureNet
from asva_model.metrics.networks.preprocess import resize_bicubic, run_batched, to_minus_one_one

FID_IMAGE_SIZE = 229


def fid_inputs(frames: torch.Tensor, size: int = FID_IMAGE_SIZE) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size) in [-1, 1]."""
    return to_minus_one_one(resize_bicubic(frames, size))


def fid_features(frames: torch.Tensor, net: ImageFeatureNet, size: int = FID_IMAGE_SIZE,
                 batch_size: int = 32, device: torch.device | str = "cpu") -> np.ndarray:
    """Pool features (N, D) of frames (N, 3, H, W) in [0, 1] (pass frames 2..12 only)."""
    return run_batched(lambda b: net(fid_inputs(b, size)), frames, batch_size, device).numpy()


def fid(gt_features: np.ndarray, gen_features: np.ndarray) -> float:
    """FID of two feature sets; per-clip (clips, frames, D) arrays are flattened to (clips*frames, D)."""
    gt, gen = np.asarray(gt_features), np.asarray(gen_features)
    return frechet_distance_of_features(gt.reshape(-1, gt.shape[-1]), gen.reshape(-1, gen.shape[-1]))
