"""AVSyncD model config section (pure dataclasses; no Ray, no platform imports).

Skeleton: the model issue owns this file and fills in every architecture field.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _require(cond: bool, key: str, why: str) -> None:
    if not cond:
        raise ValueError(f"{key}: {why}")


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    """Channels of the four UNet levels (SD-1.5: 320/640/1280/1280)."""
    layers_per_block: int = 2
    """Resnet/transformer layers per down block (SD-1.5: 2)."""
    attention_head_dim: int = 8
    """As in diffusers SD-1.x this is the number of attention heads (SD-1.5: 8)."""
    cross_attention_dim: int = 768
    """Text cross-attention key/value dim (CLIP-L: 768)."""
    audio_cross_attention_dim: int = 768
    """Audio cross-attention key/value dim (ImageBind audio tokens: 768)."""
    in_channels: int = 4
    """Latent channels in (the first frame enters as a clean latent, not by concatenation)."""

    def validate(self) -> None:
        _require(len(self.block_out_channels) >= 1, "block_out_channels", "must not be empty")
        _require(self.layers_per_block >= 1, "layers_per_block", "must be >= 1")


@dataclass
class ModelConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    """3D UNet geometry."""
    audio_cond_drop_prob: float = 0.2
    """Training: probability per sample of replacing the audio with null audio (classifier-free guidance)."""
    trainable_modules: list[str] = field(default_factory=lambda: ["_temp", "_audio"])
    """Modules whose qualified name contains any of these train; everything else is frozen."""
    gradient_checkpointing: bool = True
    """Recompute resnet/transformer activations in backward (the paper: on)."""

    def validate(self) -> None:
        _require(0.0 <= self.audio_cond_drop_prob <= 1.0, "audio_cond_drop_prob",
                 f"must be in [0, 1], got {self.audio_cond_drop_prob}")
