"""Tiny random-init stand-ins for AVSyncD's pretrained files, written in the real on-disk formats.

No weights can be downloaded in CI, so tests exercise the real loading code on these:

* ``sd/``: the diffusers Stable Diffusion 1.5 layout (``model_index.json``, ``unet/`` UNet2DConditionModel
  with ``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``, ``vae/`` AutoencoderKL,
  ``scheduler/scheduler_config.json``);
* ``imagebind_audio.pth``: a torch state dict with ImageBind's key names (``modality_*.audio.*``, plus a
  vision key the loader must skip);
* ``text_encodings.pt``: dict prompt -> (77, D); ``null_text_encoding.pt``: (1, 77, D);
* ``model.yaml``: a ``model:`` config section with the geometry and paths that load all of the above
  (usable via ``base:``).

:func:`write_authors_layout` writes a trained UNet + encoder the way the authors' released checkpoints
are laid out (``modules/unet``, ``modules/audio_encoder`` with their config class names).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import torch
import yaml
from diffusers import DDPMScheduler, PNDMScheduler, UNet2DConditionModel

from asva_model.build import build_audio_encoder, build_vae
from asva_model.config import ModelConfig
from asva_model.models.audio_encoder import IMAGEBIND_AUDIO_PREFIXES, ImageBindAudioEncoder
from asva_model.models.unet import AudioUNet3D

DEFAULT_PROMPTS = ("dog barking", "lions roaring", "playing violin fiddle")


def _unet2d(cfg: ModelConfig) -> UNet2DConditionModel:
    u = cfg.unet
    levels = len(u.block_out_channels)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=u.in_channels,
        out_channels=u.out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        attention_head_dim=u.attention_head_dim,
        cross_attention_dim=u.cross_attention_dim,
        norm_num_groups=u.norm_num_groups,
        norm_eps=u.norm_eps,
    )


def imagebind_state_dict(encoder: ImageBindAudioEncoder) -> dict[str, torch.Tensor]:
    """Our encoder's weights under ImageBind's checkpoint key names (without AVSyncD's extra LayerNorm)."""
    ours_to_theirs = {ours: theirs for theirs, ours in IMAGEBIND_AUDIO_PREFIXES.items()}
    out = {}
    for key, value in encoder.state_dict().items():
        for ours, theirs in ours_to_theirs.items():
            if key.startswith(ours):
                out[theirs + key[len(ours) :]] = value.clone()
    return out


def make_tiny_pretrained(
    out_dir: str | Path,
    model_cfg: ModelConfig,
    prompts: tuple[str, ...] = DEFAULT_PROMPTS,
    weights_format: Literal["safetensors", "bin"] = "safetensors",
    scheduler: Literal["pndm", "ddpm"] = "pndm",
    seed: int = 0,
    write_vae: bool = True,
) -> ModelConfig:
    """Write random-init pretrained files of ``model_cfg``'s geometry under ``out_dir`` (meant for a small one,
    e.g. ``configs/model/tiny.yaml``'s); returns ``model_cfg`` with its paths pointing at them.

    ``write_vae=False`` leaves ``sd/vae`` to the caller (e.g. a VAE trained by ``asva pretrain-vae``)."""
    out = Path(out_dir)
    sd = out / "sd"
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
        torch.manual_seed(seed)
        safe = weights_format == "safetensors"
        _unet2d(model_cfg).save_pretrained(sd / "unet", safe_serialization=safe)
        if write_vae:
            build_vae(dataclasses.replace(model_cfg, pretrained_sd="")).save_pretrained(
                sd / "vae", safe_serialization=safe
            )
        sched_cls = PNDMScheduler if scheduler == "pndm" else DDPMScheduler
        extra = (
            dict(skip_prk_steps=True, set_alpha_to_one=False)
            if scheduler == "pndm"
            else dict(clip_sample=False)
        )
        sched_cls(**dataclasses.asdict(model_cfg.noise_scheduler), **extra).save_pretrained(sd / "scheduler")
        (sd / "model_index.json").write_text(
            json.dumps(
                {
                    "_class_name": "StableDiffusionPipeline",
                    "unet": ["diffusers", "UNet2DConditionModel"],
                    "vae": ["diffusers", "AutoencoderKL"],
                    "scheduler": ["diffusers", sched_cls.__name__],
                },
                indent=2,
            )
        )

        encoder = build_audio_encoder(model_cfg)
        state = imagebind_state_dict(encoder)
        state["modality_trunks.vision.blocks.0.norm_1.weight"] = torch.ones(
            8
        )  # real files hold all modalities
        torch.save(state, out / "imagebind_audio.pth")

        dim = model_cfg.unet.cross_attention_dim
        torch.save({p: torch.randn(77, dim) for p in prompts}, out / "text_encodings.pt")
        torch.save(torch.randn(1, 77, dim), out / "null_text_encoding.pt")

    cfg = dataclasses.replace(
        model_cfg,
        pretrained_sd=str(sd),
        audio_encoder_weights=str(out / "imagebind_audio.pth"),
        text_encodings=str(out / "text_encodings.pt"),
        null_text_encoding=str(out / "null_text_encoding.pt"),
    )
    section = {name: dataclasses.asdict(getattr(cfg, name)) for name in ("unet", "audio_encoder", "vae")}
    section.update(
        pretrained_sd=cfg.pretrained_sd,
        audio_encoder_weights=cfg.audio_encoder_weights,
        text_encodings=cfg.text_encodings,
        null_text_encoding=cfg.null_text_encoding,
    )
    (out / "model.yaml").write_text(yaml.safe_dump({"model": section}, sort_keys=False))
    return cfg


def write_authors_layout(
    unet: AudioUNet3D, audio_encoder: ImageBindAudioEncoder, out_dir: str | Path, num_frames: int = 12
) -> Path:
    """Save ``<out_dir>/modules/{unet,audio_encoder}`` as the authors' code does (their class and block
    names in config.json, diffusers weights files); returns the ``modules`` folder."""
    modules = Path(out_dir) / "modules"
    unet.save_pretrained(modules / "unet")
    audio_encoder.save_pretrained(modules / "audio_encoder")
    c = dict(unet.config)
    levels = len(c["block_out_channels"])
    theirs = {
        "_class_name": "AudioUNet3DConditionModel",
        "_diffusers_version": "0.29.2",
        "sample_size": None,
        "in_channels": c["in_channels"],
        "out_channels": c["out_channels"],
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["FFSpatioAudioTempCrossAttnDownBlock3D"] * (levels - 1)
        + ["FFSpatioTempResDownBlock3D"],
        "mid_block_type": "FFSpatioAudioTempCrossAttnUNetMidBlock3D",
        "up_block_types": ["FFSpatioTempResUpBlock3D"]
        + ["FFSpatioAudioTempCrossAttnUpBlock3D"] * (levels - 1),
        "only_cross_attention": False,
        "block_out_channels": list(c["block_out_channels"]),
        "layers_per_block": c["layers_per_block"],
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": c["norm_num_groups"],
        "norm_eps": c["norm_eps"],
        "cross_attention_dim": c["cross_attention_dim"],
        "encoder_hid_dim": None,
        "attention_head_dim": c["attention_head_dim"],
        "dual_cross_attention": False,
        "use_linear_projection": False,
        "class_embed_type": None,
        "addition_embed_type": None,
        "num_class_embeds": None,
        "upcast_attention": False,
        "resnet_time_scale_shift": "default",
        "resnet_skip_time_act": False,
        "resnet_out_scale_factor": 1.0,
        "time_embedding_type": "positional",
        "time_embedding_dim": None,
        "time_embedding_act_fn": None,
        "timestep_post_act": None,
        "time_cond_proj_dim": None,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "projection_class_embeddings_input_dim": None,
        "class_embeddings_concat": False,
        "mid_block_only_cross_attention": None,
        "cross_attention_norm": None,
        "addition_embed_type_num_heads": 64,
        "audio_cross_attention_dim": c["audio_cross_attention_dim"],
    }
    (modules / "unet" / "config.json").write_text(json.dumps(theirs, indent=2))
    (modules / "audio_encoder" / "config.json").write_text(
        json.dumps(
            {
                "_class_name": "ImageBindSegmaskAudioEncoder",
                "_diffusers_version": "0.29.2",
                "n_segment": num_frames,
                "pretrained_model_name": "imagebind-huge",
            },
            indent=2,
        )
    )
    return modules
