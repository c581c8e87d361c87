"""The AVSync classifier whose score phi(audio, video) defines RelSync and AlignSync.

Same layout as the paper's released classifier (``checkpoints/avsync/vggss_sync_contrast/.../modules``):
three ``save_pretrained`` dirs -- ``audio_encoder`` (VGG-style 2D conv net on the log-mel),
``video_encoder`` (R(2+1)D-18 style net on 12 frames at 224^2) and ``head`` (MLP on the concatenated
embeddings -> one unbounded score). ``base_channels`` (64 in the real model) scales every width so
tests can save and load a tiny random-init classifier through the same code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from asva_model.weights import WeightsError, existing_path


class _ConvBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))


class AudioConv2DNet(ModelMixin, ConfigMixin):
    """(B, 1, 128, 204) log-mel -> (B, 8 * base_channels) mean-pooled embedding."""

    @register_to_config
    def __init__(self, base_channels: int = 64, pretrained: bool = False) -> None:
        # `pretrained` is kept only so released configs load; it selected an AVID-CMA init for training.
        super().__init__()
        c = base_channels
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, c, 7, padding=3, stride=2, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.block1 = _ConvBlock2d(c, c, stride=2)
        self.block2 = _ConvBlock2d(c, 2 * c, stride=2)
        self.block3 = _ConvBlock2d(2 * c, 4 * c, stride=2)
        self.block4 = _ConvBlock2d(4 * c, 8 * c)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(self.conv1(mel)))))
        return x.mean(dim=(2, 3))


class _R2Plus1DBlock(nn.Module):
    """Factorised (1,3,3) spatial then (3,1,1) temporal convs, twice, with a projected residual when needed."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.spt_conv1 = nn.Conv3d(
            cin, cout, (1, 3, 3), stride=(1, stride[1], stride[2]), padding=(0, 1, 1), bias=False
        )
        self.spt_bn1 = nn.BatchNorm3d(cout)
        self.tmp_conv1 = nn.Conv3d(
            cout, cout, (3, 1, 1), stride=(stride[0], 1, 1), padding=(1, 0, 0), bias=False
        )
        self.tmp_bn1 = nn.BatchNorm3d(cout)
        self.spt_conv2 = nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(cout)
        self.tmp_conv2 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(cout)
        self.res = cin != cout or any(s != 1 for s in stride)
        if self.res:
            self.res_conv = nn.Conv3d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tmp_conv1(torch.relu(self.spt_bn1(self.spt_conv1(x))))
        h = torch.relu(self.tmp_bn1(h))
        h = self.tmp_conv2(torch.relu(self.spt_bn2(self.spt_conv2(h))))
        return torch.relu(self.out_bn(h + (self.res_conv(x) if self.res else x)))


class VideoR2Plus1DNet(ModelMixin, ConfigMixin):
    """(B, 3, T, 224, 224) CLIP-normalised frames -> (B, 8 * base_channels) mean-pooled embedding."""

    @register_to_config
    def __init__(self, base_channels: int = 64, pretrained: bool = False) -> None:
        super().__init__()
        c = base_channels
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, c, (3, 7, 7), padding=(1, 3, 3), stride=(1, 2, 2), bias=False),
            nn.BatchNorm3d(c),
            nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.conv2x = nn.Sequential(_R2Plus1DBlock(c, c), _R2Plus1DBlock(c, c))
        self.conv3x = nn.Sequential(_R2Plus1DBlock(c, 2 * c, (2, 2, 2)), _R2Plus1DBlock(2 * c, 2 * c))
        self.conv4x = nn.Sequential(_R2Plus1DBlock(2 * c, 4 * c, (2, 2, 2)), _R2Plus1DBlock(4 * c, 4 * c))
        self.conv5x = nn.Sequential(_R2Plus1DBlock(4 * c, 8 * c, (2, 2, 2)), _R2Plus1DBlock(8 * c, 8 * c))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.conv5x(self.conv4x(self.conv3x(self.conv2x(self.conv1(video)))))
        return x.mean(dim=(2, 3, 4))


class FCHead(ModelMixin, ConfigMixin):
    """concat(audio, video) (2*dim) -> dim -> dim/2 -> out_dim; the first output is the sync score phi."""

    @register_to_config
    def __init__(self, dim: int = 512, out_dim: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        # Indices 0/3/6 hold the weights, as in the released checkpoint.
        self.fc = nn.Sequential(
            nn.Linear(2 * dim, dim),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(dim, dim // 2),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(dim // 2, out_dim),
        )

    def forward(self, audio_embedding: torch.Tensor, video_embedding: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([audio_embedding, video_embedding], dim=1))


class AVSyncClassifier(nn.Module):
    """phi(audio, video): (B,1,128,204) mel, (B,3,T,224,224) CLIP-normalised frames -> (B,) unbounded scores."""

    SUBDIRS = ("audio_encoder", "video_encoder", "head")

    def __init__(self, audio_encoder: AudioConv2DNet, video_encoder: VideoR2Plus1DNet, head: FCHead) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        self.video_encoder = video_encoder
        self.head = head

    def forward(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 4 or video.ndim != 5 or mel.shape[0] != video.shape[0]:
            raise ValueError(
                f"sync classifier wants mel (B,1,n,t) and video (B,3,T,H,W), got "
                f"{tuple(mel.shape)} and {tuple(video.shape)}"
            )
        return self.head(self.audio_encoder(mel), self.video_encoder(video))[:, 0]

    def save_pretrained(self, modules_dir: str | Path) -> Path:
        """Write the released layout: <modules_dir>/{audio_encoder,video_encoder,head} (.bin weights)."""
        root = Path(modules_dir)
        for name in self.SUBDIRS:
            getattr(self, name).save_pretrained(root / name, safe_serialization=False)
        return root


def load_avsync_classifier(modules_dir: str | Path, device: str | torch.device = "cpu") -> AVSyncClassifier:
    """Load the classifier from a ``modules/`` dir holding audio_encoder/, video_encoder/ and head/."""
    root = existing_path(modules_dir, "AVSync classifier (avsync_classifier)")
    parts = []
    for name, cls in zip(AVSyncClassifier.SUBDIRS, (AudioConv2DNet, VideoR2Plus1DNet, FCHead)):
        sub = existing_path(root / name, f"AVSync classifier {name} (avsync_classifier)")
        try:
            safetensors = (
                sub / "diffusion_pytorch_model.safetensors"
            ).exists()  # the released dirs hold .bin
            parts.append(cls.from_pretrained(sub, use_safetensors=safetensors, low_cpu_mem_usage=False))
        except (OSError, ValueError, RuntimeError) as err:
            raise WeightsError(f"avsync_classifier: cannot load {sub}: {err}") from None
    audio, video, head = parts
    if head.config.dim != 8 * audio.config.base_channels or head.config.dim != 8 * video.config.base_channels:
        raise WeightsError(
            f"avsync_classifier: head dim {head.config.dim} does not fit encoders of width "
            f"{audio.config.base_channels}/{video.config.base_channels} (expected 8x)"
        )
    return AVSyncClassifier(audio, video, head).to(device).eval().requires_grad_(False)
