"""Random-init metric networks saved in the real on-disk formats, for tests, smoke runs and the rehearsal.

:func:`save_tiny_metric_networks` writes a tiny one of each next to each other and returns a
:class:`MetricsConfig` pointing at them, so ``load_metric_networks(cfg)`` exercises exactly the
loading code the real weights go through. :func:`save_full_size_metric_networks` does the same at the real
sizes (FID Inception-v3, ImageBind-Huge with a full-size BPE vocabulary, the sync classifier); the I3D is
a TorchScript stand-in with the real 400-d output, since our code loads the authors' archive as it is and
has no I3D of its own. Scores from these networks are meaningless.
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
from asva_model.metrics.networks.bpe import byte_symbols, save_merges
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
    return _write_metric_networks(
        root,
        seed,
        inception=lambda: FIDInceptionV3(width_divisor=16),
        inception_file="pt_inception-tiny.pth",
        i3d_dim=16,
        imagebind=tiny_imagebind_config(),
        imagebind_file="imagebind_tiny.pth",
        merges=TINY_MERGES,
        bpe_file="bpe_tiny.txt.gz",
        heads=TINY_HEADS,
        classifier=lambda: AVSyncClassifier(
            AudioConv2DNet(base_channels=2), VideoR2Plus1DNet(base_channels=2), FCHead(dim=16)
        ),
        batch_size=16,
    )


FULL_HEADS = [16, 16, 12]
"""ImageBind-Huge's head counts (vision, text, audio): the checkpoint does not store them."""


def full_size_merges(vocab_size: int = ImageBindConfig.vocab_size) -> list[tuple[str, str]]:
    """As many BPE merges as a ``vocab_size`` vocabulary holds (2 x 256 byte symbols, the merges, 2 specials):
    pairs of byte symbols, each joined pair a new token."""
    symbols = list(byte_symbols().values())
    count = vocab_size - 2 * len(symbols) - 2
    return [(a, b) for a in symbols for b in symbols][:count]


def save_full_size_metric_networks(root: str | Path, seed: int = 0) -> MetricsConfig:
    """Write every metric network at its real size under ``root`` (ImageBind-Huge alone is ~4.8 GB)."""
    return _write_metric_networks(
        root,
        seed,
        inception=FIDInceptionV3,
        inception_file="pt_inception-2015-12-05.pth",
        i3d_dim=400,
        imagebind=ImageBindConfig(),
        imagebind_file="imagebind_huge.pth",
        merges=full_size_merges(),
        bpe_file="bpe_simple_vocab_16e6.txt.gz",
        heads=FULL_HEADS,
        classifier=lambda: AVSyncClassifier(AudioConv2DNet(), VideoR2Plus1DNet(), FCHead()),
        batch_size=4,
    )


def _write_metric_networks(
    root: str | Path,
    seed: int,
    *,
    inception,
    inception_file: str,
    i3d_dim: int,
    imagebind: ImageBindConfig,
    imagebind_file: str,
    merges: list[tuple[str, str]],
    bpe_file: str,
    heads: list[int],
    classifier,
    batch_size: int,
) -> MetricsConfig:
    """One network at a time (built, saved, freed): the full-size ones need no more memory than the largest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    state = relu_preserving_init(inception()).state_dict()
    # the ported TF file has no num_batches_tracked either
    torch.save(
        {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, root / inception_file
    )
    del state
    save_tiny_video_detector(root / "i3d_torchscript.pt", feature_dim=i3d_dim, seed=seed)
    torch.save(ImageBindEncoders(imagebind).state_dict(), root / imagebind_file)
    save_merges(root / bpe_file, merges)
    relu_preserving_init(classifier()).save_pretrained(root / "avsync" / "modules")
    return MetricsConfig(
        inception_weights=str(root / inception_file),
        i3d_weights=str(root / "i3d_torchscript.pt"),
        imagebind_weights=str(root / imagebind_file),
        imagebind_bpe=str(root / bpe_file),
        imagebind_num_heads=list(heads),
        avsync_classifier=str(root / "avsync" / "modules"),
        batch_size=batch_size,
    )
