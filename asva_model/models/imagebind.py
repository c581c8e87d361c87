"""ImageBind's building blocks, the one implementation behind both of its users in this package:

* the AVSyncD audio encoder (:mod:`asva_model.models.audio_encoder`: the audio trunk's last-layer tokens);
* the IA / IT / AlignSync metric network (:mod:`asva_model.metrics.networks.imagebind`: vision, text and
  audio embeddings).

Module and parameter names are those of ImageBind's released checkpoint (``rgbt_stem.proj``,
``pos_embedding_helper.pos_embed``, ``cls_token``, ``blocks.<i>.{attn,norm_1,mlp.fc1,mlp.fc2,norm_2}``,
``pre_transformer_layer.0``, heads ``0`` (LayerNorm) / ``2`` (Linear)), so ``imagebind_huge.pth`` loads into
either user under its own prefixes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def patch_grid_size(height: int, width: int, kernel: int, stride: int) -> tuple[int, int]:
    """(rows, columns) of patches a ``kernel`` x ``kernel`` conv with ``stride`` (no padding) makes of an
    input of ``height`` x ``width`` (the audio stem on a 128 x 204 mel: 12 x 19)."""
    return (height - kernel) // stride + 1, (width - kernel) // stride + 1


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch with probability ``p`` (train mode only), keeping the
    expectation. ``layout`` says what one keep/drop draw covers on a (batch, tokens, dim) input:
    ``per_sample`` one draw per sample; ``authors`` one draw per token position shared by the whole batch,
    which is what ImageBind's sequence-first trunk (tokens, batch, dim) gets from a per-"sample" draw."""

    def __init__(self, p: float, layout: str = "per_sample") -> None:
        super().__init__()
        if layout not in DROP_PATH_LAYOUTS:
            raise ValueError(f"drop_path_layout must be one of {DROP_PATH_LAYOUTS}, got {layout!r}")
        self.p, self.layout = p, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.layout == "authors":
            shape = (1, x.shape[1], *([1] * (x.ndim - 2)))
        else:
            shape = (x.shape[0], *([1] * (x.ndim - 1)))
        keep = x.new_empty(shape).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * keep


DROP_PATH_LAYOUTS = ("per_sample", "authors")


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6); the audio trunk's attention has learned key/value
    bias tokens (``add_bias_kv``); ``drop_path`` is the block's stochastic-depth rate."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: int = 4,
        add_bias_kv: bool = False,
        drop_path: float = 0.0,
        drop_path_layout: str = "per_sample",
    ) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=add_bias_kv, batch_first=True)
        self.drop_path = DropPath(drop_path, drop_path_layout)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    """``depth`` blocks, optionally after a LayerNorm (vision); stochastic depth rises linearly from 0 to
    ``drop_path`` over the blocks (ImageBind's "progressive" schedule), drawn as ``drop_path_layout`` says."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: int = 4,
        add_bias_kv: bool = False,
        pre_ln: bool = False,
        drop_path: float = 0.0,
        drop_path_layout: str = "per_sample",
    ) -> None:
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_ln else nn.Identity())
        rates = np.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, add_bias_kv, r, drop_path_layout) for r in rates
        )

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x


class PatchStem(nn.Module):
    """A patch projection (conv) whose grid is flattened to tokens, optionally layer-normed."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, D, *grid) -> (B, tokens, D), grid row-major
        return x if self.norm_layer is None else self.norm_layer(x)


class PosEmbed(nn.Module):
    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, dim) * dim**-0.5)


class PatchPreprocessor(nn.Module):
    """Patch stem + CLS token + learned positions (vision and audio)."""

    def __init__(self, stem: PatchStem, num_patches: int, dim: int) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.pos_embedding_helper = PosEmbed(num_patches + 1, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


def audio_preprocessor(
    dim: int, kernel: int, stride: int, num_mel_bins: int, target_length: int
) -> PatchPreprocessor:
    """ImageBind's audio stem: a square conv (no bias) on the (1, bins, frames) mel, LayerNorm, CLS, positions."""
    rows, cols = patch_grid_size(num_mel_bins, target_length, kernel, stride)
    stem = PatchStem(nn.Conv2d(1, dim, kernel, stride=stride, bias=False), nn.LayerNorm(dim))
    return PatchPreprocessor(stem, rows * cols, dim)


class SelectCLS(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def cls_head(dim: int, out_dim: int) -> nn.Sequential:
    """LayerNorm -> CLS token -> Linear (no bias): ImageBind's vision/audio embedding head."""
    return nn.Sequential(nn.LayerNorm(dim, eps=1e-6), SelectCLS(), nn.Linear(dim, out_dim, bias=False))
