"""AVSyncPipeline (inference only): first frame + 2 s of audio + class-prompt encoding -> N video frames.

As in the paper's code: the first frame's VAE latent (sampled, x 0.18215 for SD's VAE) is frame 0 of the latent video,
frames 1..N-1 start from N(0, I) (x the scheduler's ``init_noise_sigma``); each PNDM step (50 by
default) updates frames 1..N-1 only, so frame 0 stays the unchanged condition. Guidance:

* audio CFG (text scale 1, the paper's setting): ``eps = eps(t, 0a) + s_a (eps(t, a) - eps(t, 0a))``;
* text CFG only: ``eps = eps(0t, a) + s_t (eps(t, a) - eps(0t, a))``;
* dual: ``eps = eps(0t, 0a) + s_t (eps(t, 0a) - eps(0t, 0a)) + s_a (eps(t, a) - eps(t, 0a))``;

where ``0a`` is the encoder's null-audio tokens (same per-frame mask) and ``0t`` the empty-prompt
encoding. A scale of exactly 1 skips its extra pass. Seeded runs are deterministic on CPU.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.schedulers import SchedulerMixin

from asva_model.build import build_audio_encoder, build_inference_scheduler, build_unet, build_vae
from asva_model.config import ModelConfig
from asva_model.latents import LatentScaling
from asva_model.models.audio_encoder import AudioEncoder
from asva_model.models.unet import AudioUNet3D


@dataclass
class AVSyncOutput:
    frames: torch.Tensor
    """(b, f, 3, H, W) float in [0, 1]; frame 0 is the decoded condition latent."""
    latents: torch.Tensor
    """(b, C, f, h, w) final latents (scaled)."""


def guided_eps(
    unet: AudioUNet3D,
    latents: torch.Tensor,
    t: torch.Tensor | int,
    text: torch.Tensor,
    audio: torch.Tensor,
    audio_mask: torch.Tensor | None,
    null_audio: torch.Tensor | None = None,
    null_text: torch.Tensor | None = None,
    audio_scale: float = 1.0,
    text_scale: float = 1.0,
) -> torch.Tensor:
    """Noise prediction with classifier-free guidance; a guidance branch runs iff its null is given.

    All conditions go through the UNet as one batch: [(0t, 0a)], [(t, 0a)] / [(0t, a)], then (t, a).
    """
    b = latents.shape[0]
    do_audio, do_text = null_audio is not None, null_text is not None
    null_audio = null_audio.expand_as(audio) if do_audio else None
    null_text = null_text.expand_as(text) if do_text else None
    texts, audios = [text], [audio]
    if do_audio:
        texts.insert(0, text)
        audios.insert(0, null_audio)
    if do_text:
        texts.insert(0, null_text)
        audios.insert(0, null_audio if do_audio else audio)
    n = len(texts)
    eps = unet(latents.repeat(n, 1, 1, 1, 1), t, torch.cat(texts), torch.cat(audios), audio_mask)
    chunks = eps.split(b)
    if do_text and do_audio:
        uncond, with_text, full = chunks
        return uncond + text_scale * (with_text - uncond) + audio_scale * (full - with_text)
    if do_audio:
        with_text, full = chunks
        return with_text + audio_scale * (full - with_text)
    if do_text:
        with_audio, full = chunks
        return with_audio + text_scale * (full - with_audio)
    return chunks[0]


def _image_tensor(image) -> torch.Tensor:
    """PIL image(s) / uint8 arrays (H, W, 3) / float tensor (b, 3, H, W) in [0, 1] -> float (b, 3, H, W)."""
    if isinstance(image, torch.Tensor):
        return image[None] if image.ndim == 3 else image
    images = image if isinstance(image, (list, tuple)) else [image]
    arrays = [np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


class AVSyncPipeline(DiffusionPipeline):
    def __init__(
        self, unet: AudioUNet3D, vae: AutoencoderKL, audio_encoder: AudioEncoder, scheduler: SchedulerMixin
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, audio_encoder=audio_encoder, scheduler=scheduler)

    @classmethod
    def from_model_config(cls, model_cfg: ModelConfig, device: str | torch.device = "cpu") -> AVSyncPipeline:
        """Build every part from a ModelConfig (pretrained paths, ``init_unet`` for a trained UNet)."""
        unet = build_unet(model_cfg, device).eval().requires_grad_(False)
        return cls(
            unet,
            build_vae(model_cfg, device),
            build_audio_encoder(model_cfg, device),
            build_inference_scheduler(model_cfg),
        )

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(b, 3, H, W) in [0, 1] -> sampled, scaled (and shifted, where the VAE's config says) latent (b, C, h, w)
        (as the paper: a sample, not the mean)."""
        dist = self.vae.encode(image.to(self.device, self.vae.dtype) * 2 - 1).latent_dist
        noise = torch.randn(
            dist.mean.shape,
            generator=generator,
            device=generator.device if generator is not None else self.device,
        )
        return LatentScaling.of_vae(self.vae).to_diffusion(dist.mean + dist.std * noise.to(dist.mean))

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
        """(b, C, f, h, w) scaled latents -> (b, f, 3, H, W) in [0, 1]."""
        b, _, f = latents.shape[:3]
        flat = LatentScaling.of_vae(self.vae).to_vae(latents.transpose(1, 2).flatten(0, 1))
        images = torch.cat([self.vae.decode(c.to(self.vae.dtype)).sample for c in flat.split(chunk_size)])
        return (images.float() / 2 + 0.5).clamp(0, 1).unflatten(0, (b, f)).cpu()

    @torch.no_grad()
    def __call__(
        self,
        image,
        text_emb: torch.Tensor,
        mel: torch.Tensor | None = None,
        *,
        audio_tokens: torch.Tensor | None = None,
        num_frames: int = 12,
        num_inference_steps: int = 50,
        audio_guidance_scale: float = 4.0,
        text_guidance_scale: float = 1.0,
        null_text_emb: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        decode: bool = True,
        sampler: str = "standard",
    ) -> AVSyncOutput:
        """Animate ``image`` to ``num_frames`` frames following the audio.

        image: (b, 3, H, W) in [0, 1] (or PIL / uint8 arrays); text_emb: (b, 77, D) class-prompt encoding;
        mel: (b, 1, 128, 204) normalised log-mel of the 2 s window (or precomputed ``audio_tokens``);
        ``null_text_emb`` (1, 77, D) is required when ``text_guidance_scale != 1``.
        ``sampler``: ``standard`` hands the scheduler a fresh tensor every step (textbook PNDM); ``authors``
        writes each step's result into the latents in place, as the paper's pipeline does. PNDM keeps the
        sample of its first step by reference for its second, so that write changes what it reads there:
        from step 2 on the trajectory is the authors' own, not PNDM's.
        """
        if sampler not in ("standard", "authors"):
            raise ValueError(f"sampler must be standard or authors, got {sampler!r}")
        if (mel is None) == (audio_tokens is None):
            raise ValueError("pass exactly one of mel or audio_tokens")
        if text_guidance_scale != 1.0 and null_text_emb is None:
            raise ValueError("text_guidance_scale != 1 needs null_text_emb (the empty-prompt encoding)")
        device, dtype = self.device, self.unet.dtype
        image = _image_tensor(image)
        b = image.shape[0]
        tokens = audio_tokens if audio_tokens is not None else self.audio_encoder.encode(mel.to(device))
        tokens = tokens.to(device, dtype).expand(b, -1, -1)
        text = text_emb.to(device, dtype).expand(b, -1, -1)
        mask = self.audio_encoder.segment_mask(num_frames)[None].to(device)
        null_audio = (
            self.audio_encoder.null_audio_tokens().to(device, dtype) if audio_guidance_scale != 1.0 else None
        )
        null_text = null_text_emb.to(device, dtype) if text_guidance_scale != 1.0 else None

        first = self.encode_image(image, generator).to(dtype)  # b C h w
        c, h, w = first.shape[1:]
        noise = torch.randn(
            (b, c, num_frames - 1, h, w),
            generator=generator,
            device=generator.device if generator is not None else device,
        ).to(device, dtype)
        latents = torch.cat([first[:, :, None], noise], dim=2) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = (
            {"generator": generator}
            if "generator" in inspect.signature(self.scheduler.step).parameters
            else {}
        )
        for t in self.scheduler.timesteps:
            model_in = self.scheduler.scale_model_input(latents, t)
            eps = guided_eps(
                self.unet,
                model_in,
                t,
                text,
                tokens,
                mask,
                null_audio,
                null_text,
                audio_guidance_scale,
                text_guidance_scale,
            )
            # Only frames 1.. are denoised; frame 0 is the fixed condition.
            moving = self.scheduler.step(eps[:, :, 1:], t, latents[:, :, 1:], **step_kwargs).prev_sample
            if sampler == "authors":
                latents[:, :, 1:] = moving  # in place: the scheduler may still hold latents[:, :, 1:]
            else:
                latents = torch.cat([latents[:, :, :1], moving.to(dtype)], dim=2)

        frames = self.decode_latents(latents) if decode else torch.empty(0)
        return AVSyncOutput(frames=frames, latents=latents)
