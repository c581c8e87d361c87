"""RelSync and AlignSync from the AVSync classifier score phi(audio, video) (paper Eq. 5, 7-11).

    RelSync(a, v^, v)  = exp phi(a, v^) / (exp phi(a, v) + exp phi(a, v^))          (GT v scores 0.5)
    P_Align(a, v^, v)  = mean_{i=2..12} exp IA(a, v^_i) / (exp IA(a, v^_i) + exp IA(a, v_1))
    AlignSync          = RelSync x P_Align

IA here is the raw ImageBind cosine (not x100) and v_1 is the GT first frame. Reported: means x 100.
The classifier sees all 12 frames, bicubic-resized to 224x224 and CLIP-normalised, as (B, 3, T, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit

from asva_model.metrics.networks import SyncScorer
from asva_model.metrics.networks.preprocess import clip_normalize, resize_bicubic, run_batched

CLASSIFIER_IMAGE_SIZE = 224


def sync_classifier_inputs(clips: torch.Tensor, size: int = CLASSIFIER_IMAGE_SIZE) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1] -> (B, 3, T, size, size) CLIP-normalised."""
    b, t = clips.shape[:2]
    frames = clip_normalize(resize_bicubic(clips.flatten(0, 1), size))
    return frames.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4).contiguous()


def avsync_scores(
    mels: torch.Tensor,
    clips: torch.Tensor,
    scorer: SyncScorer,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """phi (B,) for mels (B, 1, 128, 204) and clips (B, T, 3, H, W) in [0, 1]; ``batch_size`` counts frames."""
    if mels.shape[0] != clips.shape[0]:
        raise ValueError(f"{mels.shape[0]} audio clips for {clips.shape[0]} video clips")
    per_batch = max(1, batch_size // max(1, clips.shape[1]))
    return (
        run_batched(lambda m, c: scorer(m, sync_classifier_inputs(c)), (mels, clips), per_batch, device)
        .numpy()
        .astype(np.float64)
    )


def relsync(phi_gen: np.ndarray, phi_gt: np.ndarray) -> np.ndarray:
    """Per-clip RelSync in [0, 1]: softmax over (phi_gt, phi_gen), generated entry (stable form of Eq. 5)."""
    phi_gen, phi_gt = np.asarray(phi_gen, np.float64), np.asarray(phi_gt, np.float64)
    if phi_gen.shape != phi_gt.shape:
        raise ValueError(f"phi_gen {phi_gen.shape} and phi_gt {phi_gt.shape} must match")
    return expit(phi_gen - phi_gt)


def align_prob(ia_gen_frames: np.ndarray, ia_gt_first: np.ndarray) -> np.ndarray:
    """Per-clip P_Align: mean over generated frames 2..12 of softmax(IA_gen_i vs IA of the GT first frame).

    ``ia_gen_frames`` (clips, frames) and ``ia_gt_first`` (clips,) are raw cosines.
    """
    ia_gen, ia_first = np.asarray(ia_gen_frames, np.float64), np.asarray(ia_gt_first, np.float64)
    if ia_gen.ndim != 2 or ia_first.shape != (ia_gen.shape[0],):
        raise ValueError(
            f"want ia_gen_frames (clips, frames) and ia_gt_first (clips,), got "
            f"{ia_gen.shape} and {ia_first.shape}"
        )
    return expit(ia_gen - ia_first[:, None]).mean(axis=1)


def alignsync(relsync_scores: np.ndarray, align_probs: np.ndarray) -> np.ndarray:
    """Per-clip AlignSync = RelSync x P_Align."""
    return np.asarray(relsync_scores, np.float64) * np.asarray(align_probs, np.float64)
