"""How VAE latents become the diffusion's latents: ``z = (x - shift) * scale``, per channel.

SD-1.5 scales only (0.18215, no shift): its latents are close to zero-mean. A VAE whose latents are not
(the toy's: one channel's mean sits near -1.6 standard deviations) breaks what sampling assumes: frames
1.. start from zero-mean noise, and whatever the model fails to pull back from zero is a shift of that
channel, a colour cast on every decoded frame (docs/toy.md, "Where the colour went"). The shift is
diffusers' ``AutoencoderKL`` config field ``latents_mean`` (as SDXL-family VAEs use it), measured by
`asva pretrain-vae`; the scale is ``scaling_factor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asva_model.config import VAE_SCALING_FACTOR, VAEConfig


@dataclass(frozen=True)
class LatentScaling:
    scale: float = VAE_SCALING_FACTOR
    """Multiplies the shifted latents (SD-1.5: 0.18215)."""
    shift: tuple[float, ...] = ()
    """Per-channel mean subtracted first (empty: none, SD-1.5's)."""

    @classmethod
    def of(cls, vae_cfg: VAEConfig) -> LatentScaling:
        return cls(vae_cfg.scaling_factor, tuple(vae_cfg.latents_mean))

    @classmethod
    def of_vae(cls, vae) -> LatentScaling:
        """From a diffusers AutoencoderKL's config (``scaling_factor``, ``latents_mean``)."""
        mean = getattr(vae.config, "latents_mean", None)
        return cls(float(vae.config.scaling_factor), tuple(float(m) for m in mean or ()))

    def _channel_shift(self, x: torch.Tensor) -> torch.Tensor | float:
        """The shift shaped to broadcast over ``x`` (b, C, ...): channels on axis 1."""
        if not self.shift:
            return 0.0
        if x.shape[1] != len(self.shift):
            raise ValueError(f"latents have {x.shape[1]} channels, the shift {len(self.shift)}")
        return torch.tensor(self.shift, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))

    def to_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """VAE latents (b, C, ...) -> diffusion latents."""
        return (x - self._channel_shift(x)) * self.scale

    def to_vae(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion latents (b, C, ...) -> VAE latents (what the decoder takes)."""
        return z / self.scale + self._channel_shift(z)


def as_shift(values: Sequence[float] | None) -> list[float]:
    """A config's ``latents_mean`` as plain floats (None: no shift)."""
    return [float(v) for v in values or ()]
