"""Tiny random-init metric networks saved in the real on-disk formats, for tests and smoke runs.

:func:`save_tiny_metric_networks` writes one of each next to each other and returns a
:class:`MetricsConfig` pointing at them, so ``load_metric_networks(cfg)`` exercises exactly the
loading code the real weights go through. Scores from these networks are meaningless.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.networks.avsync_classifier import (
    AudioConv2DNet,
    AVSyncClassifier,
    FCHead,
    VideoR2Plus1DNet,
)
from asva_model.metrics.networks.bpe import save_merges
from asva_model.metrics.networks.i3d import save_tiny_video_detector
from asva_model.metrics.networks.imagebind import ImageBindConfig, ImageBindEncoders
from asva_model.metrics.networks.inception import FIDInceptionV3

TINY_MERGES = [
    ("d", "o"),
    ("do", "g</w>"),
    ("b", "a"),
    ("r", "k"),
    ("i", "n"),
    ("in", "g</w>"),
    ("ba", "rk"),
    ("l", "i"),
    ("o", "n"),
]
TINY_HEADS = [2, 2, 2]


def tiny_imagebind_config() -> ImageBindConfig:
    return ImageBindConfig(
        vision_dim=32,
        vision_blocks=1,
        vision_heads=TINY_HEADS[0],
        vision_patch=32,
        text_dim=32,
        text_blocks=1,
        text_heads=TINY_HEADS[1],
        vocab_size=512 + len(TINY_MERGES) + 2,
        audio_dim=32,
        audio_blocks=1,
        audio_heads=TINY_HEADS[2],
        out_dim=16,
        mlp_ratio=2,
    )


def relu_preserving_init(module: nn.Module) -> nn.Module:
    # Default conv init shrinks activations layer after layer; He-normal keeps deep random nets' outputs O(1).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return module


def save_tiny_metric_networks(root: str | Path, seed: int = 0) -> MetricsConfig:
    """Write tiny FID-Inception, I3D, ImageBind (+ BPE merges) and sync classifier under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    inception = relu_preserving_init(FIDInceptionV3(width_divisor=16))
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, root / "pt_inception-tiny.pth")  # the ported TF file has no num_batches_tracked either

    save_tiny_video_detector(root / "i3d_torchscript.pt", seed=seed)

    torch.save(ImageBindEncoders(tiny_imagebind_config()).state_dict(), root / "imagebind_tiny.pth")
    save_merges(root / "bpe_tiny.txt.gz", TINY_MERGES)

    classifier = relu_preserving_init(
        AVSyncClassifier(AudioConv2DNet(base_channels=2), VideoR2Plus1DNet(base_channels=2), FCHead(dim=16))
    )
    classifier.save_pretrained(root / "avsync" / "modules")

    return MetricsConfig(
        inception_weights=str(root / "pt_inception-tiny.pth"),
        i3d_weights=str(root / "i3d_torchscript.pt"),
        imagebind_weights=str(root / "imagebind_tiny.pth"),
        imagebind_bpe=str(root / "bpe_tiny.txt.gz"),
        imagebind_num_heads=list(TINY_HEADS),
        avsync_classifier=str(root / "avsync" / "modules"),
        batch_size=16,
    )
