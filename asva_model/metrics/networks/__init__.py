"""The metric networks behind small interfaces, and loading them from the configured weight paths.

Interfaces (any object with these calls plugs in):

* ``ImageFeatureNet`` (FID): ``net(images)`` -- (B, 3, S, S) in [-1, 1] -> (B, D) pool features.
* ``VideoFeatureNet`` (FVD): ``net(videos)`` -- (B, 3, T, S, S) in [-1, 1] -> (B, D) features.
* ``Embedder`` (IA/IT/AlignSync): ``embed_image`` (B, 3, 224, 224) CLIP-normalised, ``embed_text``
  (list of str), ``embed_audio`` (B, 1, 128, 204) normalised log-mel; each -> (B, D) unit-norm.
* ``SyncScorer`` (RelSync/AlignSync): ``net(mel, video)`` -- (B, 1, 128, 204) mel and
  (B, 3, T, 224, 224) CLIP-normalised frames -> (B,) unbounded sync score phi.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from asva_model.metrics.config import MetricsConfig
from asva_model.metrics.networks.avsync_classifier import load_avsync_classifier
from asva_model.metrics.networks.bpe import BPETokenizer
from asva_model.metrics.networks.i3d import load_video_detector
from asva_model.metrics.networks.imagebind import ImageBindEmbedder, load_imagebind
from asva_model.metrics.networks.inception import load_fid_inception


@runtime_checkable
class ImageFeatureNet(Protocol):
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class VideoFeatureNet(Protocol):
    def __call__(self, videos: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Embedder(Protocol):
    image_size: int

    def embed_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor: ...

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SyncScorer(Protocol):
    def __call__(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor: ...


@dataclass
class MetricNetworks:
    """The loaded networks; a metric whose network is None cannot be computed."""

    inception: ImageFeatureNet | None = None
    """FID feature network."""
    i3d: VideoFeatureNet | None = None
    """FVD feature network."""
    imagebind: Embedder | None = None
    """IA / IT / P_Align embedder."""
    avsync: SyncScorer | None = None
    """RelSync / AlignSync sync classifier phi."""
    device: torch.device = torch.device("cpu")
    """Where inputs are sent; the networks must live there."""

    def require(self, name: str, metric: str):
        net = getattr(self, name)
        if net is None:
            raise ValueError(f"metric {metric!r} needs the {name} network, which is not loaded")
        return net


def load_metric_networks(cfg: MetricsConfig, device: str | torch.device = "cpu") -> MetricNetworks:
    """Load exactly the networks ``cfg.metrics`` needs from the configured paths (never downloads)."""
    device = torch.device(device)
    nets = MetricNetworks(device=device)
    needed = cfg.required_networks()
    if "inception" in needed:
        nets.inception = load_fid_inception(cfg.inception_weights, device)
    if "i3d" in needed:
        nets.i3d = load_video_detector(cfg.i3d_weights, device)
    if "imagebind" in needed:
        tokenizer = BPETokenizer.from_file(cfg.imagebind_bpe) if "it" in cfg.metrics else None
        nets.imagebind = ImageBindEmbedder(
            load_imagebind(cfg.imagebind_weights, cfg.imagebind_num_heads, device), tokenizer
        )
    if "avsync" in needed:
        nets.avsync = load_avsync_classifier(cfg.avsync_classifier, device)
    return nets
