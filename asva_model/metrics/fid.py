"""FID: Fréchet distance between FID-Inception pool features of GT and generated frames 2..12.

As the paper's code: frames resized bicubic (antialiased) to 229x229 -- not Inception's usual 299 --
mapped to [-1, 1], and fed straight to the network (no internal resize). All frames 2..12 of all clips
are pooled into one Gaussian per side (450 clips x 11 frames on AVSync15).

``fid_batchnorm: authors`` (:func:`fid_features_per_call`) reproduces the paper's evaluation, whose Inception
is never put in eval mode: BatchNorm normalises with each forward call's own batch statistics, and a call
is one ground-truth video (its 3 windows x 12 frames) or one generated clip (12 frames); frame 1's features
are dropped afterwards. Per-frame features then depend on the frames they share a call with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from asva_model.metrics.frechet import frechet_distance_of_features
from asva_model.metrics.networks import ImageFeatureNet
from asva_model.metrics.networks.preprocess import resize_bicubic, run_batched, to_minus_one_one

FID_IMAGE_SIZE = 229


def fid_inputs(frames: torch.Tensor, size: int = FID_IMAGE_SIZE) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size) in [-1, 1]."""
    return to_minus_one_one(resize_bicubic(frames, size))


def fid_features(
    frames: torch.Tensor,
    net: ImageFeatureNet,
    size: int = FID_IMAGE_SIZE,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Pool features (N, D) of frames (N, 3, H, W) in [0, 1] (pass frames 2..12 only)."""
    return run_batched(lambda b: net(fid_inputs(b, size)), frames, batch_size, device).numpy()


@contextlib.contextmanager
def batch_statistics(net) -> Iterator[None]:
    """Within the block every BatchNorm of ``net`` normalises with the batch's own statistics (train mode), as
    the authors' never-``.eval()``-ed Inception does; its running buffers and modes are restored afterwards,
    so the network is unchanged for later eval-mode use."""
    modules = net.modules() if isinstance(net, nn.Module) else ()
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in norms]
    try:
        for m in norms:
            m.train()
        yield
    finally:
        for m, (mode, buffers) in zip(norms, saved):
            m.train(mode)
            for k, b in buffers.items():
                getattr(m, k).copy_(b)


def fid_features_per_call(
    clips: torch.Tensor,
    net: ImageFeatureNet,
    calls: Sequence[Sequence[int]],
    size: int = FID_IMAGE_SIZE,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The authors' FID features: for each call (a list of clip indices), every frame of those clips (N, F,
    3, H, W) in [0, 1] goes through ``net`` in one forward with BatchNorm batch statistics; returns frames
    2..F's features (N, F-1, D) in clip order."""
    n, f = clips.shape[:2]
    out: list[torch.Tensor | None] = [None] * n
    with batch_statistics(net), torch.no_grad():
        for call in calls:
            idx = list(call)
            frames = clips[idx].flatten(0, 1).to(device)
            feats = net(fid_inputs(frames, size)).float().cpu().unflatten(0, (len(idx), f))
            for i, feat in zip(idx, feats):
                out[i] = feat[1:]  # frame 1 is the condition: in the batch, not in the score
    if any(o is None for o in out):
        raise ValueError(f"calls {list(calls)} do not cover all {n} clips")
    return torch.stack(out).numpy()


def fid(gt_features: np.ndarray, gen_features: np.ndarray) -> float:
    """FID of two feature sets; per-clip (clips, frames, D) arrays are flattened to (clips*frames, D)."""
    gt, gen = np.asarray(gt_features), np.asarray(gen_features)
    return frechet_distance_of_features(gt.reshape(-1, gt.shape[-1]), gen.reshape(-1, gen.shape[-1]))
