"""AVSyncD's training objective: one loss for online (raw clips) and cached (latents + tokens) training.

Both paths end in :func:`diffusion_loss`; they differ only in how its inputs are produced:

* online: :func:`prepare_online_batch` runs the frozen VAE and audio encoder on raw clips;
* cached: the cache stores the VAE's latent mean/std (unscaled) and the audio tokens, and
  :func:`prepare_cached_batch` samples the latents the same way (:func:`sample_latents`).

The loss (paper / original trainer): latents x 0.18215 (in general: :class:`asva_model.latents.LatentScaling`); DDPM noise at a per-sample timestep shared by
all frames; frame 0 replaced by its clean latent; the audio replaced by the null-audio encoding with
probability ``drop_prob`` per sample; MSE between predicted and true noise on frames 1..N-1 only, in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler

from asva_model.latents import LatentScaling
from asva_model.models.audio_encoder import AudioEncoder


def _rand(shape, generator: torch.Generator | None, device, kind: str = "normal") -> torch.Tensor:
    """Random numbers drawn on the generator's device (so a CPU generator works for GPU tensors)."""
    gen_device = generator.device if generator is not None else device
    if kind == "normal":
        out = torch.randn(shape, generator=generator, device=gen_device)
    else:
        out = torch.rand(shape, generator=generator, device=gen_device)
    return out.to(device)


def _model_dtype(model: torch.nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype inputs must have: ``model.dtype`` (diffusers models) or its first parameter's."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return param.dtype if param is not None else default


@torch.no_grad()
def encode_frames(
    vae: AutoencoderKL, frames: torch.Tensor, chunk_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (b, 3, f, H, W) in [0, 1] -> the VAE's latent distribution (mean, std), each (b, C, f, h, w).

    Unscaled (the VAE's own units); :func:`sample_latents` applies the scaling. Frames are encoded
    in chunks of ``chunk_size`` to bound memory.
    """
    if frames.ndim != 5 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (b, 3, f, H, W) in [0, 1], got {tuple(frames.shape)}")
    b, _, f = frames.shape[:3]
    flat = frames.transpose(1, 2).flatten(0, 1).to(vae.dtype) * 2 - 1
    means, stds = [], []
    for chunk in flat.split(chunk_size):
        dist = vae.encode(chunk).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)

    def video(parts):
        return torch.cat(parts).unflatten(0, (b, f)).transpose(1, 2).float()

    return video(means), video(stds)


def sample_latents(
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator | None = None,
    scaling: LatentScaling = LatentScaling(),
) -> torch.Tensor:
    """``scaling.to_diffusion(mean + std * eps)``: SD's ``latent_dist.sample() * scaling_factor`` in general."""
    return scaling.to_diffusion(mean + std * _rand(mean.shape, generator, mean.device))


def audio_keep_mask(
    batch: int, drop_prob: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(batch,) bool: True keeps the sample's audio, False swaps in null audio (probability drop_prob)."""
    return _rand((batch,), generator, device, kind="uniform") >= drop_prob


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    audio_tokens: torch.Tensor,
    null_audio_tokens: torch.Tensor,
    audio_mask: torch.Tensor,
    text_emb: torch.Tensor,
    drop_prob: float,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
) -> torch.Tensor:
    """The AVSyncD loss (fp32 scalar; with ``per_sample`` one value per sample, shape (b,)).

    latents: (b, C, f, h, w), already scaled by 0.18215; audio_tokens: (b, S, Da);
    null_audio_tokens: (1 or b, S, Da); audio_mask: (1 or b, f, S) bool; text_emb: (b, 77, Dt).
    ``generator`` seeds the audio dropout, timesteps and noise (None: the global RNG).
    """
    b, f = latents.shape[0], latents.shape[2]
    if f < 2:
        raise ValueError("diffusion_loss needs >= 2 frames (frame 0 is the condition, not a target)")
    device = latents.device
    keep = audio_keep_mask(b, drop_prob, generator, device)
    audio = torch.where(keep[:, None, None], audio_tokens, null_audio_tokens.expand_as(audio_tokens))

    steps = scheduler.config.num_train_timesteps
    gen_device = generator.device if generator is not None else device
    timesteps = torch.randint(0, steps, (b,), generator=generator, device=gen_device).to(device)
    noise = _rand(latents.shape, generator, device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    noisy = torch.cat([latents[:, :, :1], noisy[:, :, 1:]], dim=2)  # frame 0 stays clean: it is the condition

    if scheduler.config.prediction_type == "epsilon":
        target = noise
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")

    dtype = _model_dtype(unet, latents.dtype)
    pred = unet(noisy.to(dtype), timesteps, text_emb.to(dtype), audio.to(dtype), audio_mask)
    if per_sample:
        return (pred[:, :, 1:].float() - target[:, :, 1:].float()).pow(2).flatten(1).mean(dim=1)
    return F.mse_loss(pred[:, :, 1:].float(), target[:, :, 1:].float())


@dataclass
class LossInputs:
    """Everything :func:`diffusion_loss` needs besides the model, scheduler and dropout."""

    latents: torch.Tensor
    audio_tokens: torch.Tensor
    null_audio_tokens: torch.Tensor
    audio_mask: torch.Tensor
    text_emb: torch.Tensor

    @classmethod
    def concat(cls, parts: list[LossInputs]) -> LossInputs:
        """Batches joined along the sample axis (null audio and a shared (1, f, S) mask are kept once)."""
        first = parts[0]
        mask = (
            first.audio_mask if first.audio_mask.shape[0] == 1 else torch.cat([p.audio_mask for p in parts])
        )
        return cls(
            torch.cat([p.latents for p in parts]),
            torch.cat([p.audio_tokens for p in parts]),
            first.null_audio_tokens[:1],
            mask,
            torch.cat([p.text_emb for p in parts]),
        )


@torch.no_grad()
def prepare_online_batch(
    vae: AutoencoderKL,
    audio_encoder: AudioEncoder,
    frames: torch.Tensor,
    mel: torch.Tensor,
    text_emb: torch.Tensor,
    generator: torch.Generator | None = None,
    scaling: LatentScaling = LatentScaling(),
    audio_drop_path: bool = True,
) -> LossInputs:
    """Raw clips -> loss inputs: frames (b,3,f,H,W) in [0,1], mel (b,1,bins,T) normalised, text (b,77,D).

    With ``audio_drop_path`` the frozen encoder runs in train mode (stochastic depth active, for the real
    and the null audio), reproducing the original trainer; otherwise in eval mode.
    """
    mean, std = encode_frames(vae, frames)
    latents = sample_latents(mean, std, generator, scaling)
    was_training = audio_encoder.training
    audio_encoder.train(audio_drop_path)
    try:
        tokens = audio_encoder.encode(mel)
        null = audio_encoder.encode(torch.zeros_like(mel[:1]))
    finally:
        audio_encoder.train(was_training)
    mask = audio_encoder.segment_mask(frames.shape[2])[None]
    return LossInputs(latents, tokens, null, mask, text_emb)


def prepare_cached_batch(
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    audio_tokens: torch.Tensor,
    null_audio_tokens: torch.Tensor,
    audio_mask: torch.Tensor,
    text_emb: torch.Tensor,
    generator: torch.Generator | None = None,
    scaling: LatentScaling = LatentScaling(),
) -> LossInputs:
    """Cached latent distribution + audio tokens -> loss inputs (latents sampled like the online path)."""
    return LossInputs(
        sample_latents(latent_mean, latent_std, generator, scaling),
        audio_tokens,
        null_audio_tokens,
        audio_mask,
        text_emb,
    )


def loss_from_inputs(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    inputs: LossInputs,
    drop_prob: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`diffusion_loss` on a prepared batch (either path)."""
    return diffusion_loss(
        unet,
        scheduler,
        inputs.latents,
        inputs.audio_tokens,
        inputs.null_audio_tokens,
        inputs.audio_mask,
        inputs.text_emb,
        drop_prob,
        generator,
    )


@dataclass
class AudioLossGap:
    """Held-out denoising loss of one model with each window's own audio, another clip's audio and the
    null audio, at identical noise and timesteps: if the model uses its audio, the own-audio loss is lower."""

    loss_true: float
    loss_other_audio: float
    loss_null_audio: float
    gap_t: float
    """Paired t-statistic of (other-audio loss - own-audio loss) over windows (> 0: the audio helps)."""
    win_rate: float
    """Fraction of windows whose own-audio loss is below their other-audio loss."""
    num_windows: int


def paired_t(diff: torch.Tensor) -> float:
    """t-statistic of the mean of paired differences (0 when they are all equal)."""
    d = diff.double()
    sd = float(d.std()) if len(d) > 1 else 0.0
    return float(d.mean()) / (sd / len(d) ** 0.5) if sd > 0 else 0.0


def other_clip_index(clip_ids: list[str]) -> torch.Tensor | None:
    """For each window, a window of the next clip (clips in order of first appearance, cyclic; the j-th
    window of a clip pairs with the (j mod n)-th of the next): "another clip's audio". None with < 2 clips."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(clip_ids):
        groups.setdefault(c, []).append(i)
    order = list(groups.values())
    if len(order) < 2:
        return None
    other = torch.empty(len(clip_ids), dtype=torch.long)
    for k, members in enumerate(order):
        nxt = order[(k + 1) % len(order)]
        for j, i in enumerate(members):
            other[i] = nxt[j % len(nxt)]
    return other


@torch.no_grad()
def audio_loss_gap(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    inputs: LossInputs,
    other: torch.Tensor,
    seed: int = 0,
    draws: int = 4,
    batch_size: int = 16,
) -> AudioLossGap:
    """Per-window loss with own / other (``inputs.audio_tokens[other]``) / null audio, each averaged over
    ``draws`` noise draws; the same seed per window and draw makes the three losses see identical noise and
    timesteps, so their difference is the audio's effect alone. ``other[i] != i`` must hold (pick windows of
    another clip)."""
    n = inputs.latents.shape[0]
    if n < 2 or len(other) != n or bool((other == torch.arange(n)).any()):
        raise ValueError("audio_loss_gap needs >= 2 windows and other[i] != i for every window")
    was_training = unet.training
    unet.eval()
    variants = {
        "true": inputs.audio_tokens,
        "other": inputs.audio_tokens[other],
        "null": inputs.null_audio_tokens.expand_as(inputs.audio_tokens),
    }
    losses = {k: torch.zeros(n) for k in variants}
    try:
        for lo in range(0, n, batch_size):
            sl = slice(lo, min(lo + batch_size, n))
            for draw in range(draws):
                for name, audio in variants.items():
                    gen = torch.Generator().manual_seed(seed * 1_000_003 + lo * 1_009 + draw)
                    mask = inputs.audio_mask if inputs.audio_mask.shape[0] == 1 else inputs.audio_mask[sl]
                    losses[name][sl] += (
                        diffusion_loss(
                            unet,
                            scheduler,
                            inputs.latents[sl],
                            audio[sl],
                            inputs.null_audio_tokens,
                            mask,
                            inputs.text_emb[sl],
                            0.0,
                            gen,
                            per_sample=True,
                        ).cpu()
                        / draws
                    )
    finally:
        unet.train(was_training)
    diff = losses["other"] - losses["true"]
    return AudioLossGap(
        float(losses["true"].mean()),
        float(losses["other"].mean()),
        float(losses["null"].mean()),
        paired_t(diff),
        float((diff > 0).double().mean()),
        n,
    )
