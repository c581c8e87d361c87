"""The paper's evaluation protocol: which windows of each test video are generated and which frames are scored.

* Every test video gives ``test_clips_per_video`` (3) evenly spaced windows of ``clip_duration`` (2 s):
  starts ``linspace(0, duration - clip_duration, 3)`` -- head, centre, tail
  (:func:`asva_model.data.sampling.test_window_starts`); each is an :class:`EvalWindow`.
* Each window is 12 frames at 6 fps. FID, IA and IT score frames 2..12 (the first frame is the
  condition, copied from the ground truth); FVD and the sync metrics use all 12 frames.
* Generated clips are named ``<video stem>_clip-<k:02d>`` (as the paper's generation script).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch

PAPER_FPS = 6.0
"""Frame rate of evaluation clips."""
PAPER_CLIP_DURATION = 2.0
"""Seconds per evaluation window (= frames / fps)."""
IMAGE_METRIC_FIRST_FRAME = 1
"""0-based index of the first frame FID/IA/IT score: frames 2..12, because frame 1 is the GT condition."""
SCORE_SCALE = 100.0
"""IA, IT, RelSync and AlignSync are reported as percentages."""


def clip_name(video: str, index: int) -> str:
    """Name of the generated clip for window ``index`` of ``video``: ``<dir>/<stem>_clip-<k:02d>``."""
    path = PurePosixPath(video)
    return str(path.with_name(f"{path.stem}_clip-{index:02d}"))


@dataclass(frozen=True)
class EvalWindow:
    """One evaluation window: the conditions (first GT frame, audio, class) and the GT clip come from here."""

    video: str
    """Video path relative to the dataset's videos/ dir, e.g. ``dog_barking/xyz.mp4``."""
    class_name: str
    """Class folder name (the paper's IT text for AVSync15)."""
    index: int
    """Window index within the video, 0..num_clips-1."""
    start: float
    """Start time in seconds."""
    duration: float = PAPER_CLIP_DURATION
    """Window length in seconds."""

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def name(self) -> str:
        return clip_name(self.video, self.index)


def as_frames_first(clip: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """A clip as float32 (N, 3, H, W) in [0, 1].

    Accepts (N, 3, H, W) or (3, N, H, W); ``layout`` ("NCHW"/"CNHW") resolves the 3-frame ambiguity.
    uint8 input is scaled by 1/255; float input outside [0, 1] is rejected (wrong normalisation).
    """
    if not isinstance(clip, torch.Tensor):
        clip = torch.as_tensor(np.asarray(clip))
    if clip.ndim != 4:
        raise ValueError(f"a clip must be 4-D (N,3,H,W) or (3,N,H,W), got shape {tuple(clip.shape)}")
    if layout is None:
        if clip.shape[1] == 3 and clip.shape[0] != 3:
            layout = "NCHW"
        elif clip.shape[0] == 3 and clip.shape[1] != 3:
            layout = "CNHW"
        elif clip.shape[0] == 3 and clip.shape[1] == 3:
            raise ValueError("clip shape (3,3,H,W) is ambiguous; pass layout='NCHW' or 'CNHW'")
        else:
            raise ValueError(f"no RGB axis of size 3 in clip shape {tuple(clip.shape)}")
    if layout == "CNHW":
        clip = clip.permute(1, 0, 2, 3)
    elif layout != "NCHW":
        raise ValueError(f"layout must be 'NCHW' or 'CNHW', got {layout!r}")
    if clip.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got clip shape {tuple(clip.shape)} as {layout}")
    if clip.dtype == torch.uint8:
        return clip.float() / 255.0
    if not clip.is_floating_point():
        raise ValueError(f"clip dtype must be float in [0,1] or uint8, got {clip.dtype}")
    clip = clip.float()
    lo, hi = float(clip.min()), float(clip.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"clip values must be in [0, 1], got [{lo:.3f}, {hi:.3f}] (pass frames, not [-1,1] or 0..255)"
        )
    return clip.clamp(0.0, 1.0)


def image_metric_frames(clip: torch.Tensor) -> torch.Tensor:
    """Frames FID, IA and IT score: 2..12 of a (N, 3, H, W) clip (the first frame is the GT condition)."""
    if clip.shape[0] <= IMAGE_METRIC_FIRST_FRAME:
        raise ValueError(f"a clip needs at least 2 frames for the image metrics, got {clip.shape[0]}")
    return clip[IMAGE_METRIC_FIRST_FRAME:]


def reported(per_clip: np.ndarray) -> tuple[float, float]:
    """(mean, sample std) over clips x 100: how IA, IT, RelSync and AlignSync are reported."""
    x = np.asarray(per_clip, np.float64) * SCORE_SCALE
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"want one score per clip, got shape {x.shape}")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0
