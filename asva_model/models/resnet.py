"""First-frame inflated convolutions and the 3D resnet / resampling blocks built from them.

Every Conv2d of SD-1.5's resnets, shortcuts, conv_in/conv_out and down/upsamplers becomes a
:class:`FFInflatedConv`: the frozen 2D conv runs on each frame, then a zero-initialised per-position
``Linear(3C -> C)`` over ``[frame 0, previous frame, current frame]`` is added (the "FF temporal conv").
Parameter names match diffusers' 2D UNet (``conv1.weight``) plus ``conv1.conv_temp.*``, so SD-1.5 and
the authors' checkpoints load without renaming.

Inside the UNet, video tensors are kept as ``((b f), c, h, w)`` (frames folded into the batch, so 2D
convs and per-frame attention need no transposes) and ``num_frames`` is passed along.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def frame_group_norm(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """GroupNorm whose statistics pool all frames of a clip, as the original resnets do.

    (They normalise the 5D ``(b, c, f, h, w)`` tensor, so each group's mean/var spans every frame.)
    """
    video = x.unflatten(0, (-1, num_frames)).transpose(1, 2)  # b c f h w
    out = F.group_norm(video, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return out.transpose(1, 2).flatten(0, 1)


class FFInflatedConv(nn.Conv2d):
    """Conv2d applied per frame plus the zero-initialised first/previous/current-frame mixer."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self.conv_temp = nn.Linear(3 * out_channels, out_channels)
        nn.init.zeros_(self.conv_temp.weight)
        nn.init.zeros_(self.conv_temp.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        y = super().forward(x)  # (b f) c h w
        c = y.shape[1]
        # Linear(3C->C)(cat[y0, y_prev, y]) == W0 y0 + W1 y_prev + W2 y + bias. Evaluating the three C x C
        # products as 1x1 convs avoids the 3C concat and runs W0 on frame 0 only.
        w0, w1, w2 = self.conv_temp.weight[..., None, None].split(c, dim=1)
        cur_prev = F.conv2d(y, torch.cat([w2, w1], 0)).unflatten(0, (-1, num_frames))  # b f 2c h w
        from_cur, from_prev = cur_prev.split(c, dim=2)
        from_prev = torch.cat([from_prev[:, :1], from_prev[:, :-1]], dim=1)  # frame 0's "previous" is itself
        frames = y.unflatten(0, (-1, num_frames))
        from_first = F.conv2d(frames[:, 0], w0).unsqueeze(1)
        bias = self.conv_temp.bias.view(1, 1, c, 1, 1)
        return (frames + from_cur + from_prev + from_first + bias).flatten(0, 1)


class FFResnetBlock3D(nn.Module):
    """SD's ResnetBlock2D on video: frame-pooled GroupNorm, FF inflated convs, per-clip time embedding."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = FFInflatedConv(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = FFInflatedConv(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (
            FFInflatedConv(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``x``: ((b f), c, h, w); ``temb``: (b, temb_channels), shared by the frames of a clip."""
        h = self.conv1(F.silu(frame_group_norm(self.norm1, x, num_frames)), num_frames)
        t = self.time_emb_proj(F.silu(temb)).repeat_interleave(num_frames, dim=0)
        h = h + t[:, :, None, None]
        h = F.silu(frame_group_norm(self.norm2, h, num_frames))
        h = self.conv2(self.dropout(h), num_frames)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x, num_frames)
        return x + h


class FFDownsample3D(nn.Module):
    """Stride-2 FF inflated conv (diffusers Downsample2D with use_conv=True -> ``conv``)."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.conv = FFInflatedConv(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.conv(x, num_frames)


class FFUpsample3D(nn.Module):
    """Nearest 2x spatial upsampling per frame, then an FF inflated conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = FFInflatedConv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, num_frames: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x, num_frames)
