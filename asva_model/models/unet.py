"""AudioUNet3D: SD-1.5's UNet inflated to video with first-frame, audio and temporal layers (AVSyncD).

``forward(sample (b,4,f,h,w), timestep, encoder_hidden_states (b,77,Dt), audio_hidden_states (b,S,Da),
audio_attention_mask (b|1, f, S) bool) -> (b,4,f,h,w)``. Text and audio tokens are per clip and shared
by all frames; the mask restricts frame k's audio cross-attention to its window of tokens.

State-dict names equal diffusers' UNet2DConditionModel plus the new ``*_temp`` / ``*_audio`` modules,
which is also the layout of the authors' released ``modules/unet`` folders.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from asva_model.config import UNetConfig
from asva_model.models.blocks import DownBlock3D, MidBlock3D, UpBlock3D
from asva_model.models.resnet import FFInflatedConv, frame_group_norm
from asva_model.models.trainable import NEW_MODULE_PATTERNS, apply_trainable, trainable_parameter_names
from asva_model.weights import WeightsError, load_strict, load_weights_file

__all__ = ["AudioUNet3D", "apply_trainable", "config_from_2d", "trainable_parameter_names"]

UNET_FIELDS = tuple(f.name for f in dataclasses.fields(UNetConfig))
"""The constructor's arguments: the ``model.unet`` config section's keys."""

# Block types: ours, SD-1.5's 2D names (inflation) and the authors' 3D names (their config.json).
_BLOCK_ALIASES = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock3D",
    "CrossAttnDownBlock2D": "CrossAttnDownBlock3D",
    "FFSpatioAudioTempCrossAttnDownBlock3D": "CrossAttnDownBlock3D",
    "DownBlock3D": "DownBlock3D",
    "DownBlock2D": "DownBlock3D",
    "FFSpatioTempResDownBlock3D": "DownBlock3D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock3DCrossAttn",
    "UNetMidBlock2DCrossAttn": "UNetMidBlock3DCrossAttn",
    "FFSpatioAudioTempCrossAttnUNetMidBlock3D": "UNetMidBlock3DCrossAttn",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock3D",
    "CrossAttnUpBlock2D": "CrossAttnUpBlock3D",
    "FFSpatioAudioTempCrossAttnUpBlock3D": "CrossAttnUpBlock3D",
    "UpBlock3D": "UpBlock3D",
    "UpBlock2D": "UpBlock3D",
    "FFSpatioTempResUpBlock3D": "UpBlock3D",
}
# 2D/authors' config keys beyond UNetConfig's, with the only value this architecture implements (SD-1.5's).
_SD_ONLY = {
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "act_fn": "silu",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1.0,
    "use_linear_projection": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "num_class_embeds": None,
    "encoder_hid_dim": None,
    "only_cross_attention": False,
    "upcast_attention": False,
    "dual_cross_attention": False,
    "center_input_sample": False,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "class_embeddings_concat": False,
    "projection_class_embeddings_input_dim": None,
    "cross_attention_norm": None,
}


def _canonical(name: str) -> str:
    if name not in _BLOCK_ALIASES:
        raise WeightsError(f"unsupported UNet block type {name!r} (supported: {sorted(set(_BLOCK_ALIASES))})")
    return _BLOCK_ALIASES[name]


def _sd_block_types(levels: int) -> tuple[list[str], str, list[str]]:
    """SD-1.5's rule: attention on every level except the deepest."""
    down = ["CrossAttnDownBlock3D"] * (levels - 1) + ["DownBlock3D"]
    up = ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * (levels - 1)
    return down, "UNetMidBlock3DCrossAttn", up


class AudioUNet3D(ModelMixin, ConfigMixin):
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] | list[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        cross_attention_dim: int = 768,
        audio_cross_attention_dim: int = 768,
        in_channels: int = 4,
        out_channels: int = 4,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
    ) -> None:
        # The arguments are exactly UNetConfig's fields: AudioUNet3D(**dataclasses.asdict(cfg.unet)). Block
        # types follow SD-1.5 (attention on every level but the deepest); other 2D configs convert through
        # config_from_2d.
        super().__init__()
        levels = len(block_out_channels)
        c0 = block_out_channels[0]
        temb = c0 * 4
        common = dict(
            heads=attention_head_dim,
            text_dim=cross_attention_dim,
            audio_dim=audio_cross_attention_dim,
            groups=norm_num_groups,
            eps=norm_eps,
        )
        self.conv_in = FFInflatedConv(in_channels, c0, 3, padding=1)
        self.time_proj = Timesteps(c0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(c0, temb, act_fn="silu")

        self.down_blocks = nn.ModuleList()
        out_ch = c0
        for i in range(levels):
            in_ch, out_ch = out_ch, block_out_channels[i]
            self.down_blocks.append(
                DownBlock3D(
                    in_ch,
                    out_ch,
                    temb,
                    layers_per_block,
                    with_attention=i < levels - 1,
                    add_downsample=i < levels - 1,
                    **common,
                )
            )
        self.mid_block = MidBlock3D(block_out_channels[-1], temb, **common)

        self.up_blocks = nn.ModuleList()
        rev = list(reversed(block_out_channels))
        out_ch = rev[0]
        for i in range(levels):
            prev, out_ch = out_ch, rev[i]
            in_ch = rev[min(i + 1, levels - 1)]
            self.up_blocks.append(
                UpBlock3D(
                    in_ch,
                    prev,
                    out_ch,
                    temb,
                    layers_per_block + 1,
                    with_attention=i > 0,
                    add_upsample=i < levels - 1,
                    **common,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, c0, eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = FFInflatedConv(c0, out_channels, 3, padding=1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        audio_hidden_states: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if sample.ndim != 5:
            raise ValueError(f"sample must be (b, c, f, h, w), got shape {tuple(sample.shape)}")
        b, _, f, height, width = sample.shape
        text = _per_clip(encoder_hidden_states, b, "encoder_hidden_states")
        audio = _per_clip(audio_hidden_states, b, "audio_hidden_states")
        mask = None
        if audio_attention_mask is not None:
            if audio_attention_mask.shape[-2:] != (f, audio.shape[1]):
                raise ValueError(
                    f"audio_attention_mask must be (b, {f}, {audio.shape[1]}), "
                    f"got {tuple(audio_attention_mask.shape)}"
                )
            mask = audio_attention_mask.to(device=sample.device, dtype=torch.bool).expand(b, -1, -1)

        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t
        emb = self.time_embedding(self.time_proj(t).to(self.conv_in.weight.dtype))  # same for all frames

        x = self.conv_in(sample.transpose(1, 2).flatten(0, 1), f)  # frames folded into the batch
        skips = (x,)
        for block in self.down_blocks:
            x, res = block(x, emb, text, audio, mask, f)
            skips += res
        x = self.mid_block(x, emb, text, audio, mask, f)

        # When h/w is not a multiple of the total downsampling, upsample to the skip's exact size.
        forward_size = (
            height % 2 ** (len(self.up_blocks) - 1) != 0 or width % 2 ** (len(self.up_blocks) - 1) != 0
        )
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            size = tuple(skips[-1].shape[-2:]) if forward_size and i < len(self.up_blocks) - 1 else None
            x = block(x, res, emb, text, audio, mask, f, size)

        x = self.conv_out(self.conv_act(frame_group_norm(self.conv_norm_out, x, f)), f)
        return x.unflatten(0, (b, f)).transpose(1, 2).contiguous()

    # ------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained_2d(cls, unet_dir: str | Path, audio_cross_attention_dim: int = 768) -> AudioUNet3D:
        """Inflate a diffusers SD-1.x ``unet/`` folder (config.json + safetensors or .bin weights).

        Every 2D weight is copied; the new ``_temp``/``_audio`` modules keep their fresh (zero) init.
        Raises ValueError if the 2D config uses features this architecture lacks or weights do not map.
        """
        unet_dir = Path(unet_dir)
        config_file = unet_dir / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{config_file}: not found (expected a diffusers UNet2DConditionModel folder)"
            )
        config2d = json.loads(config_file.read_text())
        model = cls(**config_from_2d(config2d, audio_cross_attention_dim))
        state2d = load_weights_file(unet_dir)
        merged, problems = inflate_state_dict(model.state_dict(), state2d)
        if problems:
            raise WeightsError(f"{unet_dir}: 2D weights do not map onto the 3D UNet: {'; '.join(problems)}")
        return load_strict(model, merged, str(unet_dir))


def config_from_2d(config2d: dict, audio_cross_attention_dim: int = 768) -> dict:
    """Our constructor kwargs (UNetConfig's fields) from a UNet2DConditionModel or the authors' 3D config.json.

    Keys beyond UNetConfig must hold SD-1.5's values (block types included); anything else this architecture
    does not implement is a one-line error. ``audio_cross_attention_dim`` applies when the config has none.
    """
    for key, ok in _SD_ONLY.items():
        if config2d.get(key, ok) != ok:
            raise WeightsError(f"UNet config {key}={config2d[key]!r} is not supported (AVSyncD needs {ok!r})")
    levels = len(config2d["block_out_channels"])
    # A saved AudioUNet3D config of an older version holds null block types; absent and null mean the same.
    for key, sd in zip(("down_block_types", "mid_block_type", "up_block_types"), _sd_block_types(levels)):
        given = config2d.get(key)
        canonical = [_canonical(t) for t in given] if isinstance(given, list) else given and _canonical(given)
        if given is not None and canonical != sd:
            raise WeightsError(
                f"UNet config {key}={given!r} is not supported (AVSyncD needs SD-1.5's {sd!r}: "
                "attention on every level but the deepest)"
            )
    kwargs = {k: config2d[k] for k in UNET_FIELDS if config2d.get(k) is not None}
    heads = kwargs.get("attention_head_dim")
    if isinstance(heads, (list, tuple)):  # SD configs may list it per level
        if len(set(heads)) != 1:
            raise WeightsError(
                f"UNet config attention_head_dim={heads} is not supported (one head count for every level)"
            )
        kwargs["attention_head_dim"] = heads[0]
    kwargs.setdefault("audio_cross_attention_dim", audio_cross_attention_dim)
    return dataclasses.asdict(
        UNetConfig(**{**kwargs, "block_out_channels": list(kwargs["block_out_channels"])})
    )


def inflate_state_dict(state3d: dict, state2d: dict) -> tuple[dict, list[str]]:
    """3D state dict with every non-new weight taken from ``state2d``; returns (merged, problems)."""
    merged, problems = {}, []
    for key, value in state3d.items():
        is_new = any(p in key for p in NEW_MODULE_PATTERNS)
        if is_new:
            merged[key] = value
        elif key not in state2d:
            problems.append(f"missing {key}")
        elif state2d[key].shape != value.shape:
            problems.append(f"{key}: shape {tuple(state2d[key].shape)} != {tuple(value.shape)}")
        else:
            merged[key] = state2d[key]
    unused = sorted(k for k in state2d if k not in state3d)
    if unused:
        problems.append(f"unused 2D weights {unused[:5]}{'...' if len(unused) > 5 else ''}")
    return merged, problems


def _per_clip(context: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if context.ndim != 3 or context.shape[0] not in (1, batch):
        raise ValueError(f"{name} must be (b or 1, tokens, dim) with b={batch}, got {tuple(context.shape)}")
    return context.expand(batch, -1, -1)
