"""Frame preprocessing shared by the metric networks (torchvision-equivalent, without torchvision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ImageBind / CLIP image normalisation (used by IA/IT and by the sync classifier).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_bicubic(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, size, size), bicubic with antialias.

    Same op as torchvision's ``Resize((size, size), BICUBIC, antialias=True)`` on tensors, which the
    paper's metric code uses; the following CenterCrop(size) is then a no-op. Not clamped, as there.
    """
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False, antialias=True)


def to_minus_one_one(frames: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (Inception and I3D inputs)."""
    return frames * 2.0 - 1.0


def clip_normalize(frames: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (N, 3, H, W) -> CLIP mean/std normalised."""
    mean = torch.tensor(CLIP_MEAN, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    return (frames - mean) / std


def run_batched(
    fn, inputs: torch.Tensor | tuple[torch.Tensor, ...], batch_size: int, device: torch.device | str
) -> torch.Tensor:
    """``fn`` over ``inputs`` (one tensor or a tuple sliced together) in chunks of ``batch_size`` along
    dim 0, on ``device``, without autograd; float32 results concatenated on the CPU."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.inference_mode():
        outs = [
            fn(*(x[i : i + batch_size].to(device) for x in xs)).float().cpu()
            for i in range(0, xs[0].shape[0], batch_size)
        ]
    return torch.cat(outs) if outs else torch.empty(0)
