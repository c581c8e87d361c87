"""Random cached-mode batches at a config's geometry, for driving the real trainer without a cache: the GPU
check's step timing (``bench/gpu_check.py``) and the trainer's unit tests. The batch has the cache's layout,
so :func:`asva_platform.training.data.cached_inputs` turns it into loss inputs exactly as in training."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from asva_model.build import build_audio_encoder
from asva_model.latents import LatentScaling
from asva_platform.training.data import audio_mask, cached_inputs
from asva_platform.training.spec import TrainerSpec


def synthetic_batch(spec: TrainerSpec, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One micro-batch as the cache collates it (CPU tensors): the latent distribution (mean, std 0.1), audio
    tokens, the null audio tokens and text encodings."""
    m, s = spec.model, spec.sampling
    b, f = spec.train.batch_size_per_worker, s.num_frames
    h, w = (size // m.vae.downsample_factor for size in s.image_size)
    encoder = build_audio_encoder(m, device="meta")  # geometry only: token count and width
    tokens, width = encoder.num_tokens, m.audio_encoder.embed_dim
    return {
        "mean": torch.randn(b, m.unet.in_channels, f, h, w, generator=generator),
        "std": torch.full((b, m.unet.in_channels, f, h, w), 0.1),
        "audio_tokens": torch.randn(b, tokens, width, generator=generator),
        "null_audio_tokens": torch.randn(b, tokens, width, generator=generator),
        "text": torch.randn(b, 77, m.unet.cross_attention_dim, generator=generator),
    }


class SyntheticSource:
    """A :class:`~asva_platform.training.loop.WorkerTrainer` data source that repeats one synthetic batch and
    has no held-out windows."""

    def __init__(self, spec: TrainerSpec, device: torch.device, seed: int = 0) -> None:
        self.batch = synthetic_batch(spec, torch.Generator().manual_seed(seed))
        self.mask = audio_mask(spec.model, spec.sampling.num_frames)
        self.scaling = LatentScaling.of(spec.model.vae)
        self.device = device

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        return itertools.repeat(self.batch)

    def to_inputs(self, batch: dict, generator: torch.Generator | None):
        return cached_inputs(batch, self.mask, self.scaling, self.device, generator)

    def val_items(self, share: bool = True) -> list:
        return []
