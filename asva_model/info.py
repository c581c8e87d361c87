"""Parameter accounting of AVSyncD, built on the ``meta`` device (no memory, no weights).

``model_info(model_cfg)`` -> {"total", "trainable", "frozen", "groups": {ff_temporal_conv, temporal_attn,
audio_cross_attn, unet2d, audio_encoder, vae}, ...}. "total" counts everything the model loads (UNet,
audio encoder, VAE); the CLIP text encoder is not part of it because text encodings are precomputed.

``asva model-info --config <experiment.yaml> [--json]`` (asva_platform.cli) prints it for a config.
"""

from __future__ import annotations

from asva_model.build import build_audio_encoder, build_unet, build_vae
from asva_model.config import ModelConfig
from asva_model.models.trainable import PARAM_GROUPS, parameter_group

GROUPS = (*PARAM_GROUPS, "unet2d", "audio_encoder", "vae")


def geometry(model_cfg: ModelConfig) -> str:
    """The widths in a few words, e.g. ``UNet 320/640/1280/1280 x2, audio encoder 768 x12, VAE 128/256/512/512``."""
    u, a, v = model_cfg.unet, model_cfg.audio_encoder, model_cfg.vae
    return (
        f"UNet {'/'.join(map(str, u.block_out_channels))} x{u.layers_per_block}, "
        f"audio encoder {a.embed_dim} x{a.num_blocks}, VAE {'/'.join(map(str, v.block_out_channels))}"
    )


def model_info(model_cfg: ModelConfig) -> dict:
    unet = build_unet(model_cfg, device="meta")
    groups = dict.fromkeys(GROUPS, 0)
    trainable = 0
    for name, param in unet.named_parameters():
        groups[parameter_group(name)] += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    groups["audio_encoder"] = sum(
        p.numel() for p in build_audio_encoder(model_cfg, device="meta").parameters()
    )
    groups["vae"] = sum(p.numel() for p in build_vae(model_cfg, device="meta").parameters())
    total = sum(groups.values())
    return {
        "geometry": geometry(model_cfg),
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "unet": sum(groups[g] for g in (*PARAM_GROUPS, "unet2d")),
        "groups": groups,
        "trainable_modules": list(model_cfg.trainable_modules),
    }


def describe(info: dict) -> str:
    """:func:`model_info` as a few human-readable lines."""
    lines = [
        f"AVSyncD ({info['geometry']}): {info['total'] / 1e6:.1f}M parameters, "
        f"{info['trainable'] / 1e6:.1f}M trainable, {info['frozen'] / 1e6:.1f}M frozen"
    ]
    lines += [f"  {name:<18} {count / 1e6:10.2f}M" for name, count in info["groups"].items()]
    return "\n".join(lines)
