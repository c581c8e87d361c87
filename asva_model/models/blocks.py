"""UNet levels: down, mid and up blocks, each with or without attention (SD-1.5 layout).

Module names (``resnets``, ``attentions``, ``downsamplers``, ``upsamplers``) match diffusers'
UNet2DConditionModel, so SD-1.5 weights map one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from asva_model.models.resnet import FFDownsample3D, FFResnetBlock3D, FFUpsample3D
from asva_model.models.transformer import FFAudioTemporalTransformer3D


class _Checkpointed(nn.Module):
    """Runs sub-modules through diffusers' gradient-checkpointing hook when it is switched on."""

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False  # set by ModelMixin.enable_gradient_checkpointing

    def _run(self, module: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)


def checkpoint_units(model: nn.Module) -> list[nn.Module]:
    """The sub-modules gradient checkpointing recomputes (each resnet and transformer of every level, the
    modules ``_run`` wraps): planning counts their activations as recomputed, not stored."""
    units: list[nn.Module] = []
    for block in model.modules():
        if isinstance(block, _Checkpointed):
            units += [*block.resnets, *(block.attentions or [])]
    return units


def _transformers(
    with_attention: bool, count: int, channels: int, heads: int, text_dim: int, audio_dim: int, groups: int
) -> nn.ModuleList | None:
    if not with_attention:
        return None
    return nn.ModuleList(
        [FFAudioTemporalTransformer3D(channels, heads, text_dim, audio_dim, groups) for _ in range(count)]
    )


class DownBlock3D(_Checkpointed):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        *,
        with_attention: bool,
        add_downsample: bool,
        heads: int,
        text_dim: int,
        audio_dim: int,
        groups: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                FFResnetBlock3D(
                    in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps
                )
                for i in range(num_layers)
            ]
        )
        self.attentions = _transformers(
            with_attention, num_layers, out_channels, heads, text_dim, audio_dim, groups
        )
        self.downsamplers = nn.ModuleList([FFDownsample3D(out_channels)]) if add_downsample else None

    def forward(self, x, temb, text, audio, audio_mask, num_frames: int):
        skips = ()
        for i, resnet in enumerate(self.resnets):
            x = self._run(resnet, x, temb, num_frames)
            if self.attentions is not None:
                x = self._run(self.attentions[i], x, text, audio, audio_mask, num_frames)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, num_frames)
            skips += (x,)
        return x, skips


class MidBlock3D(_Checkpointed):
    def __init__(
        self,
        channels: int,
        temb_channels: int,
        *,
        heads: int,
        text_dim: int,
        audio_dim: int,
        groups: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [FFResnetBlock3D(channels, channels, temb_channels, groups, eps) for _ in range(2)]
        )
        self.attentions = _transformers(True, 1, channels, heads, text_dim, audio_dim, groups)

    def forward(self, x, temb, text, audio, audio_mask, num_frames: int):
        x = self._run(self.resnets[0], x, temb, num_frames)
        x = self._run(self.attentions[0], x, text, audio, audio_mask, num_frames)
        return self._run(self.resnets[1], x, temb, num_frames)


class UpBlock3D(_Checkpointed):
    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        *,
        with_attention: bool,
        add_upsample: bool,
        heads: int,
        text_dim: int,
        audio_dim: int,
        groups: int,
        eps: float,
    ) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            resnets.append(
                FFResnetBlock3D(resnet_in + skip_channels, out_channels, temb_channels, groups, eps)
            )
        self.resnets = nn.ModuleList(resnets)
        self.attentions = _transformers(
            with_attention, num_layers, out_channels, heads, text_dim, audio_dim, groups
        )
        self.upsamplers = nn.ModuleList([FFUpsample3D(out_channels)]) if add_upsample else None

    def forward(self, x, skips, temb, text, audio, audio_mask, num_frames: int, upsample_size=None):
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips[-1 - i]], dim=1)
            x = self._run(resnet, x, temb, num_frames)
            if self.attentions is not None:
                x = self._run(self.attentions[i], x, text, audio, audio_mask, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, num_frames, upsample_size)
        return x
