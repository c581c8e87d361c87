"""AVSyncD model config section (pure dataclasses; no Ray, no platform imports).

Defaults are the paper's model (SD-1.5 UNet inflated to 3D + ImageBind-Huge audio branch, see
docs/model.md). The test-size geometry (a train step in well under a second on CPU) is data, not code:
``configs/model/tiny.yaml`` spells out its ``unet``, ``audio_encoder`` and ``vae`` sections.

Every section checks itself in ``__post_init__`` (also when built in Python) and raises
:class:`~asva_model.errors.ConfigError` ``"<key>: <why>"`` with the key relative to the section; the
platform's loader prefixes the section path and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_model.errors import require

VAE_SCALING_FACTOR = 0.18215
"""SD-1.5's latent scaling factor (vae/config.json: scaling_factor)."""


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    """Channels of the four UNet levels (SD-1.5: 320/640/1280/1280). Every level but the deepest has attention."""
    layers_per_block: int = 2
    """Resnet/transformer layers per down block (SD-1.5: 2; up blocks have one more)."""
    attention_head_dim: int = 8
    """As in diffusers SD-1.x this is the number of attention heads (SD-1.5: 8)."""
    cross_attention_dim: int = 768
    """Text cross-attention key/value dim (CLIP-L: 768)."""
    audio_cross_attention_dim: int = 768
    """Audio cross-attention key/value dim (ImageBind audio tokens: 768); must equal audio_encoder.embed_dim."""
    in_channels: int = 4
    """Latent channels in (the first frame enters as a clean latent, not by concatenation)."""
    out_channels: int = 4
    """Latent channels out (the predicted noise)."""
    norm_num_groups: int = 32
    """GroupNorm groups in resnets/transformers (SD-1.5: 32); must divide every block width."""
    norm_eps: float = 1e-5
    """GroupNorm epsilon of the resnets (SD-1.5: 1e-5)."""

    def __post_init__(self) -> None:
        require(len(self.block_out_channels) >= 2, "block_out_channels", "needs at least 2 levels")
        require(self.layers_per_block >= 1, "layers_per_block", "must be >= 1")
        require(self.attention_head_dim >= 1, "attention_head_dim", "must be >= 1")
        for c in self.block_out_channels:
            require(
                c % self.norm_num_groups == 0,
                "block_out_channels",
                f"{c} is not divisible by norm_num_groups={self.norm_num_groups}",
            )
            require(
                c % self.attention_head_dim == 0,
                "block_out_channels",
                f"{c} is not divisible by attention_head_dim={self.attention_head_dim} (heads)",
            )


@dataclass
class AudioEncoderConfig:
    name: Literal["imagebind"] = "imagebind"
    """Audio backbone: `imagebind` = ImageBind-Huge audio branch (the paper)."""
    embed_dim: int = 768
    """Token width (ImageBind-Huge audio: 768)."""
    num_blocks: int = 12
    """Transformer blocks (ImageBind-Huge audio: 12)."""
    num_heads: int = 12
    """Attention heads (ImageBind-Huge audio: 12)."""
    head_out_dim: int = 1024
    """Width of the pooled-embedding head (unused for tokens, kept so checkpoints load strictly; Huge: 1024)."""
    patch_size: int = 16
    """Square patch-stem kernel on the mel spectrogram (ImageBind: 16)."""
    patch_stride: int = 10
    """Patch-stem stride (ImageBind: 10; gives 12 x 19 patches on a 128 x 204 mel)."""
    num_mel_bins: int = 128
    """Mel bins of the input spectrogram (must match sampling.num_mel_bins)."""
    target_length: int = 204
    """Mel frames of the input spectrogram (must match sampling.mel_target_length)."""
    drop_path: float = 0.1
    """Stochastic-depth rate of the last block (linear from 0; ImageBind-Huge audio: 0.1)."""
    drop_path_in_training: bool = True
    """Online training runs the frozen encoder in train mode so drop-path is active, as the original code did."""
    drop_path_layout: Literal["per_sample", "authors"] = "per_sample"
    """What one stochastic-depth draw covers in training: `per_sample` one per clip; `authors` one per token
    position shared by the batch, as ImageBind's sequence-first trunk draws it. Rates are the same. Set by
    the `protocol` switch."""

    def __post_init__(self) -> None:
        require(
            self.embed_dim % self.num_heads == 0,
            "embed_dim",
            f"{self.embed_dim} is not divisible by num_heads={self.num_heads}",
        )
        require(0.0 <= self.drop_path < 1.0, "drop_path", f"must be in [0, 1), got {self.drop_path}")
        require(
            self.drop_path_layout in ("per_sample", "authors"),
            "drop_path_layout",
            f"must be per_sample or authors, got {self.drop_path_layout!r}",
        )
        require(
            self.num_mel_bins >= self.patch_size and self.target_length >= self.patch_size,
            "patch_size",
            "is larger than the mel spectrogram",
        )


@dataclass
class VAEConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    """AutoencoderKL level widths when built without `pretrained_sd` (SD-1.5: 128/256/512/512 = 8x down)."""
    layers_per_block: int = 2
    """AutoencoderKL resnets per level (SD-1.5: 2)."""
    latent_channels: int = 4
    """Latent channels (SD-1.5: 4); must equal unet.in_channels."""
    norm_num_groups: int = 32
    """AutoencoderKL GroupNorm groups (SD-1.5: 32)."""
    scaling_factor: float = VAE_SCALING_FACTOR
    """Latents are multiplied by this before diffusion (SD-1.5: 0.18215); cached latents are stored unscaled."""
    latents_mean: list[float] = field(default_factory=list)
    """Per-channel shift subtracted before scaling (diffusers' ``latents_mean``; asva_model/latents.py): empty
    for SD-1.5, whose latents are near zero-mean; `asva pretrain-vae` measures it for a VAE whose are not."""

    def __post_init__(self) -> None:
        require(self.scaling_factor > 0, "scaling_factor", "must be > 0")
        require(
            not self.latents_mean or len(self.latents_mean) == self.latent_channels,
            "latents_mean",
            f"needs one value per latent channel ({self.latent_channels}), got {len(self.latents_mean)}",
        )

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class NoiseSchedulerConfig:
    num_train_timesteps: int = 1000
    """Diffusion steps (the paper: 1000)."""
    beta_start: float = 0.00085
    """First beta (SD-1.5: 0.00085)."""
    beta_end: float = 0.012
    """Last beta (SD-1.5: 0.012)."""
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    """Beta schedule (SD-1.5: scaled_linear)."""
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the UNet predicts (the paper: epsilon)."""
    steps_offset: int = 1
    """Inference timestep offset (SD-1.5: 1)."""

    def __post_init__(self) -> None:
        require(self.num_train_timesteps >= 2, "num_train_timesteps", "must be >= 2")
        require(
            0 < self.beta_start < self.beta_end < 1,
            "beta_start",
            f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}",
        )


@dataclass
class ModelConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    """3D UNet geometry."""
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    """Frozen audio encoder geometry."""
    vae: VAEConfig = field(default_factory=VAEConfig)
    """Frozen VAE geometry (used when `pretrained_sd` is empty) and latent scaling."""
    noise_scheduler: NoiseSchedulerConfig = field(default_factory=NoiseSchedulerConfig)
    """Training noise schedule (DDPM); the inference PNDM scheduler uses the same betas."""
    pretrained_sd: str = ""
    """Local diffusers SD-1.5 folder (unet/, vae/, scheduler/); empty = random init (tests, meta builds)."""
    init_unet: str = ""
    """A saved 3D UNet folder (ours or the authors' `modules/unet`); wins over pretrained_sd/unet."""
    audio_encoder_weights: str = ""
    """ImageBind checkpoint (`imagebind_huge.pth`) or a saved encoder folder (the authors' `modules/audio_encoder`)."""
    text_encodings: str = ""
    """`.pt` dict prompt -> (77, cross_attention_dim) CLIP-L encoding (AVSync15's class_clip_text_encodings...pt)."""
    null_text_encoding: str = ""
    """`.pt` (1, 77, cross_attention_dim) encoding of the empty prompt; needed only for text guidance != 1."""
    audio_cond_drop_prob: float = 0.2
    """Training: probability per sample of replacing the audio with null audio (classifier-free guidance)."""
    trainable_modules: list[str] = field(default_factory=lambda: ["_temp", "_audio"])
    """Modules whose qualified name contains any of these train; everything else is frozen. `*` trains every
    module (a UNet without pretrained SD-1.5 weights, e.g. the toy recipe)."""
    gradient_checkpointing: bool = True
    """Recompute resnet/transformer activations in backward (the paper: on)."""

    def __post_init__(self) -> None:
        require(
            0.0 <= self.audio_cond_drop_prob <= 1.0,
            "audio_cond_drop_prob",
            f"must be in [0, 1], got {self.audio_cond_drop_prob}",
        )
        require(bool(self.trainable_modules), "trainable_modules", "must name at least one module pattern")
        require(
            self.unet.audio_cross_attention_dim == self.audio_encoder.embed_dim,
            "unet.audio_cross_attention_dim",
            f"{self.unet.audio_cross_attention_dim} != audio_encoder.embed_dim {self.audio_encoder.embed_dim}",
        )
        require(
            self.vae.latent_channels == self.unet.in_channels == self.unet.out_channels,
            "vae.latent_channels",
            "must equal unet.in_channels and unet.out_channels",
        )


@dataclass
class VAEPretrainConfig:
    steps: int = 1500
    """Optimizer steps (AdamW)."""
    batch_size: int = 16
    """Frames per step."""
    lr: float = 1e-3
    """AdamW learning rate (the peak, with ``final_lr_fraction`` < 1)."""
    final_lr_fraction: float = 1.0
    """The learning rate decays along a cosine from ``lr`` to this fraction of it at the last step (1 =
    constant). The last digits of PSNR come from the low-rate steps."""
    kl_weight: float = 1e-6
    """Weight of the KL term (summed over the latent) against the pixel MSE (a mean over pixels). SD's 1e-6
    sits beside a *summed* pixel loss; beside a mean over 3x32x32 pixels it is ~3000x stronger and keeps the
    posterior wide (std ~0.45 after 4000 steps), noise that every sampled latent carries into the picture."""
    clips: int = 96
    """Synthetic clips the training frames are drawn from (spread over the classes)."""
    frames_per_clip: int = 24
    """Frames drawn per training clip, at random times."""
    held_out_frames: int = 256
    """Frames from other clips on which PSNR and the scaling factor are measured."""
    min_psnr_db: float = 25.0
    """Fail (and save nothing) when the held-out reconstruction PSNR is below this."""
    seed: int = 0
    """Seed of the synthetic clips, frame times, init and batches."""
    threads: int = 0
    """torch threads while training (0 = torch's default)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "clips", "frames_per_clip", "held_out_frames"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        require(self.lr > 0, "lr", "must be > 0")
        require(
            0.0 < self.final_lr_fraction <= 1.0,
            "final_lr_fraction",
            f"must be in (0, 1], got {self.final_lr_fraction}",
        )
        require(self.kl_weight >= 0, "kl_weight", "must be >= 0")
        require(self.threads >= 0, "threads", "must be >= 0")
