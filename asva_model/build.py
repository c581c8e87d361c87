"""Build AVSyncD's parts from a :class:`~asva_model.config.ModelConfig`, loading pretrained paths when set.

``device="meta"`` builds the architecture without memory or weights (parameter counts, planning).
Frozen parts (VAE, audio encoder) come back in eval mode with ``requires_grad=False``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler

from asva_model.config import ModelConfig, UNetConfig
from asva_model.models.audio_encoder import ImageBindAudioEncoder
from asva_model.models.trainable import apply_trainable
from asva_model.models.unet import AudioUNet3D, config_from_2d, load_weights_file


def unet_kwargs(unet: UNetConfig) -> dict:
    return dict(in_channels=unet.in_channels, out_channels=unet.out_channels,
                block_out_channels=tuple(unet.block_out_channels), layers_per_block=unet.layers_per_block,
                attention_head_dim=unet.attention_head_dim, cross_attention_dim=unet.cross_attention_dim,
                audio_cross_attention_dim=unet.audio_cross_attention_dim, norm_num_groups=unet.norm_num_groups,
                norm_eps=unet.norm_eps)


def load_unet(folder: str | Path) -> AudioUNet3D:
    """A saved 3D UNet folder: ours (``save_pretrained``) or the authors' ``modules/unet``."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: not found (expected a saved 3D UNet folder)")
    model = AudioUNet3D(**config_from_2d(json.loads(config_file.read_text()), audio_cross_attention_dim=768))
    state = load_weights_file(folder)
    missing, unexpected = sorted(set(model.state_dict()) - set(state)), sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match the 3D UNet (missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]})")
    model.load_state_dict(state, strict=True)
    return model


def _check_geometry(model: AudioUNet3D, want: UNetConfig, source: str) -> None:
    have = model.config
    expected = unet_kwargs(want)
    diffs = [f"{k}={have[k]!r} (config: {v!r})" for k, v in expected.items()
             if (tuple(have[k]) if isinstance(have[k], list) else have[k]) != v]
    if diffs:
        raise ValueError(f"{source}: UNet geometry differs from model.unet: {', '.join(diffs)}")


def build_unet(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> AudioUNet3D:
    """The 3D UNet with trainable/frozen split and gradient checkpointing applied.

    Weights: ``init_unet`` (a saved 3D UNet) > ``pretrained_sd``/unet (inflated) > random init.
    On ``meta`` no weights are loaded.
    """
    cfg = model_cfg.resolved()
    if str(device) == "meta":
        with torch.device("meta"):
            model = AudioUNet3D(**unet_kwargs(cfg.unet))
    elif cfg.init_unet:
        model = load_unet(cfg.init_unet)
        _check_geometry(model, cfg.unet, f"model.init_unet {cfg.init_unet}")
    elif cfg.pretrained_sd:
        model = AudioUNet3D.from_pretrained_2d(Path(cfg.pretrained_sd) / "unet", cfg.unet.audio_cross_attention_dim)
        _check_geometry(model, cfg.unet, f"model.pretrained_sd {cfg.pretrained_sd}")
    else:
        model = AudioUNet3D(**unet_kwargs(cfg.unet))
    apply_trainable(model, cfg.trainable_modules)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model.to(device) if str(device) != "meta" else model


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def build_audio_encoder(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> ImageBindAudioEncoder:
    """Frozen audio encoder; loads ``audio_encoder_weights`` (ImageBind .pth or saved folder) when set."""
    a = model_cfg.resolved().audio_encoder
    kwargs = dict(embed_dim=a.embed_dim, num_blocks=a.num_blocks, num_heads=a.num_heads,
                  head_out_dim=a.head_out_dim, patch_size=a.patch_size, patch_stride=a.patch_stride,
                  num_mel_bins=a.num_mel_bins, target_length=a.target_length, drop_path=a.drop_path)
    if str(device) == "meta":
        with torch.device("meta"):
            return _freeze(ImageBindAudioEncoder(**kwargs))
    encoder = ImageBindAudioEncoder(**kwargs)
    if model_cfg.audio_encoder_weights:
        encoder.load_weights(model_cfg.audio_encoder_weights)
    return _freeze(encoder).to(device)


def build_vae(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> AutoencoderKL:
    """Frozen AutoencoderKL from ``pretrained_sd``/vae, else from the configured geometry (random)."""
    cfg = model_cfg.resolved()
    if cfg.pretrained_sd and str(device) != "meta":
        vae = AutoencoderKL.from_pretrained(cfg.pretrained_sd, subfolder="vae", low_cpu_mem_usage=False)
        if abs(vae.config.scaling_factor - cfg.vae.scaling_factor) > 1e-9:
            raise ValueError(f"model.vae.scaling_factor {cfg.vae.scaling_factor} differs from "
                             f"{cfg.pretrained_sd}/vae scaling_factor {vae.config.scaling_factor}")
        return _freeze(vae).to(device)
    levels = len(cfg.vae.block_out_channels)
    kwargs = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                  up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(cfg.vae.block_out_channels),
                  layers_per_block=cfg.vae.layers_per_block, latent_channels=cfg.vae.latent_channels,
                  norm_num_groups=cfg.vae.norm_num_groups, scaling_factor=cfg.vae.scaling_factor)
    with torch.device(device):
        return _freeze(AutoencoderKL(**kwargs))


def _scheduler_kwargs(model_cfg: ModelConfig) -> dict:
    s = model_cfg.noise_scheduler
    return dict(num_train_timesteps=s.num_train_timesteps, beta_start=s.beta_start, beta_end=s.beta_end,
                beta_schedule=s.beta_schedule, prediction_type=s.prediction_type, steps_offset=s.steps_offset)


def build_noise_scheduler(model_cfg: ModelConfig) -> DDPMScheduler:
    """The training schedule: DDPM, 1000 steps, scaled_linear 0.00085 -> 0.012, epsilon (no clipping)."""
    return DDPMScheduler(**_scheduler_kwargs(model_cfg), clip_sample=False)


def build_inference_scheduler(model_cfg: ModelConfig) -> PNDMScheduler:
    """PNDM as in the paper: ``pretrained_sd``/scheduler when present, else SD-1.5's settings from the config."""
    if model_cfg.pretrained_sd and (Path(model_cfg.pretrained_sd) / "scheduler").is_dir():
        return PNDMScheduler.from_pretrained(model_cfg.pretrained_sd, subfolder="scheduler")
    return PNDMScheduler(**_scheduler_kwargs(model_cfg), skip_prk_steps=True, set_alpha_to_one=False)
