"""Build AVSyncD's parts from a :class:`~asva_model.config.ModelConfig`, loading pretrained paths when set.

``device="meta"`` builds the architecture without memory or weights (parameter counts, planning).
Frozen parts (VAE, audio encoder) come back in eval mode with ``requires_grad=False``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler

from asva_model.config import AudioEncoderConfig, ModelConfig, UNetConfig
from asva_model.latents import as_shift
from asva_model.models.audio_encoder import ImageBindAudioEncoder
from asva_model.models.trainable import apply_trainable
from asva_model.models.unet import AudioUNet3D, config_from_2d
from asva_model.weights import WeightsError, from_pretrained_strict, load_strict, load_weights_file

AUDIO_ENCODER_RUNTIME_FIELDS = ("name", "drop_path_in_training")
"""``model.audio_encoder`` keys that are not the encoder's constructor arguments: which backbone it is, and
how the training loop runs it."""


def audio_encoder_kwargs(cfg: AudioEncoderConfig) -> dict:
    """The :class:`ImageBindAudioEncoder` constructor arguments: the section minus its runtime-only keys."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in AUDIO_ENCODER_RUNTIME_FIELDS}


def load_unet(folder: str | Path) -> AudioUNet3D:
    """A saved 3D UNet folder: ours (``save_pretrained``: config.json ``_class_name`` AudioUNet3D, loaded with
    ``from_pretrained``) or the authors' ``modules/unet`` (their 2D-style config, converted). Strict either way."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: not found (expected a saved 3D UNet folder)")
    config = json.loads(config_file.read_text())
    if config.get("_class_name") == AudioUNet3D.__name__:
        return from_pretrained_strict(AudioUNet3D, folder).train()
    model = AudioUNet3D(**config_from_2d(config))
    return load_strict(model, load_weights_file(folder), str(folder))


def _check_geometry(model: AudioUNet3D, want: UNetConfig, source: str) -> None:
    have = model.config
    diffs = [
        f"{k}={have[k]!r}, model.unet: {v!r}"
        for k, v in dataclasses.asdict(want).items()
        if (list(have[k]) if isinstance(have[k], (list, tuple)) else have[k]) != v
    ]
    if diffs:
        raise WeightsError(f"{source}: weights do not fit model.unet (geometry {'; '.join(diffs)})")


def build_unet(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> AudioUNet3D:
    """The 3D UNet with trainable/frozen split and gradient checkpointing applied.

    Weights: ``init_unet`` (a saved 3D UNet) > ``pretrained_sd``/unet (inflated) > random init.
    On ``meta`` no weights are loaded.
    """
    if str(device) == "meta":
        with torch.device("meta"):
            model = AudioUNet3D(**dataclasses.asdict(model_cfg.unet))
    elif model_cfg.init_unet:
        model = load_unet(model_cfg.init_unet)
        _check_geometry(model, model_cfg.unet, f"model.init_unet {model_cfg.init_unet}")
    elif model_cfg.pretrained_sd:
        model = AudioUNet3D.from_pretrained_2d(
            Path(model_cfg.pretrained_sd) / "unet", model_cfg.unet.audio_cross_attention_dim
        )
        _check_geometry(model, model_cfg.unet, f"model.pretrained_sd {model_cfg.pretrained_sd}")
    else:
        model = AudioUNet3D(**dataclasses.asdict(model_cfg.unet))
    apply_trainable(model, model_cfg.trainable_modules)
    if model_cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model.to(device) if str(device) != "meta" else model


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def build_audio_encoder(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> ImageBindAudioEncoder:
    """Frozen audio encoder; loads ``audio_encoder_weights`` (ImageBind .pth or saved folder) when set."""
    kwargs = audio_encoder_kwargs(model_cfg.audio_encoder)
    if str(device) == "meta":
        with torch.device("meta"):
            return _freeze(ImageBindAudioEncoder(**kwargs))
    encoder = ImageBindAudioEncoder(**kwargs)
    if model_cfg.audio_encoder_weights:
        encoder.load_weights(model_cfg.audio_encoder_weights)
    return _freeze(encoder).to(device)


def build_vae(model_cfg: ModelConfig, device: str | torch.device = "cpu") -> AutoencoderKL:
    """Frozen AutoencoderKL from ``pretrained_sd``/vae, else from the configured geometry (random)."""
    if model_cfg.pretrained_sd and str(device) != "meta":
        vae = AutoencoderKL.from_pretrained(model_cfg.pretrained_sd, subfolder="vae", low_cpu_mem_usage=False)
        if abs(vae.config.scaling_factor - model_cfg.vae.scaling_factor) > 1e-9:
            raise WeightsError(
                f"model.vae.scaling_factor {model_cfg.vae.scaling_factor} differs from "
                f"{model_cfg.pretrained_sd}/vae scaling_factor {vae.config.scaling_factor}"
            )
        saved = as_shift(vae.config.latents_mean)
        if len(saved) != len(model_cfg.vae.latents_mean) or any(
            abs(a - b) > 1e-6 for a, b in zip(saved, model_cfg.vae.latents_mean)
        ):
            raise WeightsError(
                f"model.vae.latents_mean {model_cfg.vae.latents_mean} differs from "
                f"{model_cfg.pretrained_sd}/vae latents_mean {saved}"
            )
        return _freeze(vae).to(device)
    v = model_cfg.vae
    levels = len(v.block_out_channels)
    kwargs = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(v.block_out_channels),
        layers_per_block=v.layers_per_block,
        latent_channels=v.latent_channels,
        norm_num_groups=v.norm_num_groups,
        scaling_factor=v.scaling_factor,
        latents_mean=tuple(v.latents_mean) or None,
    )
    with torch.device(device):
        return _freeze(AutoencoderKL(**kwargs))


def build_noise_scheduler(model_cfg: ModelConfig) -> DDPMScheduler:
    """The training schedule: DDPM, 1000 steps, scaled_linear 0.00085 -> 0.012, epsilon (no clipping)."""
    return DDPMScheduler(**dataclasses.asdict(model_cfg.noise_scheduler), clip_sample=False)


def build_inference_scheduler(model_cfg: ModelConfig) -> PNDMScheduler:
    """PNDM as in the paper: ``pretrained_sd``/scheduler when present, else SD-1.5's settings from the config.

    The schedule and prediction type are always ``model.noise_scheduler``'s, the ones the UNet was trained
    with (SD-1.5's folder holds the same defaults): a v-prediction UNet sampled as epsilon decodes noise.
    """
    trained = dataclasses.asdict(model_cfg.noise_scheduler)
    if model_cfg.pretrained_sd and (Path(model_cfg.pretrained_sd) / "scheduler").is_dir():
        folder = PNDMScheduler.from_pretrained(model_cfg.pretrained_sd, subfolder="scheduler")
        return PNDMScheduler.from_config(folder.config, **trained)
    return PNDMScheduler(**trained, skip_prk_steps=True, set_alpha_to_one=False)
