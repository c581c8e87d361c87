"""The spatial-audio-temporal transformer that replaces SD's Transformer2DModel in every attention level.

Sub-layer order inside each block (paper supp. Fig. 2, original code):

1. ``norm1 -> attn1``: SD self-attention with keys/values from frame 0 (frozen SD weights);
2. ``norm_audio -> attn_audio``: new audio cross-attention with the per-frame token mask (trainable);
3. ``norm2 -> attn2``: SD text cross-attention (frozen);
4. ``norm_temp -> attn_temp``: new temporal self-attention over the frames at each position, with a
   sinusoidal-frame-index MLP position embedding; output projection weight zero-initialised (trainable);
5. ``norm3 -> ff``: SD GEGLU feed-forward (frozen).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from asva_model.models.attention import FirstFrameAttnProcessor, SharedContextAttnProcessor


class FFAudioTemporalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, text_dim: int, audio_dim: int) -> None:
        super().__init__()
        head_dim = dim // heads

        def attention(context_dim: int | None, processor) -> Attention:
            return Attention(
                query_dim=dim,
                cross_attention_dim=context_dim,
                heads=heads,
                dim_head=head_dim,
                bias=False,
                processor=processor,
            )

        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = attention(None, FirstFrameAttnProcessor())
        self.norm_audio = nn.LayerNorm(dim)
        self.attn_audio = attention(audio_dim, SharedContextAttnProcessor())
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = attention(text_dim, SharedContextAttnProcessor())
        self.pos_proj_temp = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.pos_embedding_temp = TimestepEmbedding(dim, dim)
        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = attention(None, AttnProcessor2_0())
        nn.init.zeros_(self.attn_temp.to_out[0].weight)  # bias keeps its default init, as in the original
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        """``x``: ((b f), n, dim); ``text``: (b, T, Dt); ``audio``: (b, S, Da); ``audio_mask``: (b, f, S)."""
        # Processors are called directly (not via Attention.forward, which inspects signatures per call).
        x = x + self.attn1.processor(self.attn1, self.norm1(x), num_frames=num_frames)
        x = x + self.attn_audio.processor(
            self.attn_audio, self.norm_audio(x), audio, audio_mask, num_frames=num_frames
        )
        x = x + self.attn2.processor(self.attn2, self.norm2(x), text, num_frames=num_frames)

        n = x.shape[1]
        frame_index = torch.arange(num_frames, device=x.device)
        pos = self.pos_embedding_temp(self.pos_proj_temp(frame_index).to(x.dtype))  # f dim
        seq = x.unflatten(0, (-1, num_frames)).transpose(1, 2).flatten(0, 1)  # (b n) f dim
        seq = seq + self.attn_temp.processor(self.attn_temp, self.norm_temp(seq + pos))
        x = seq.unflatten(0, (-1, n)).transpose(1, 2).flatten(0, 1)

        return x + self.ff(self.norm3(x))


class FFAudioTemporalTransformer3D(nn.Module):
    """GroupNorm + 1x1 proj_in, one :class:`FFAudioTemporalBlock`, 1x1 proj_out, residual (per frame)."""

    def __init__(self, channels: int, heads: int, text_dim: int, audio_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([FFAudioTemporalBlock(channels, heads, text_dim, audio_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        bf, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (b f) (h w) c
        for block in self.transformer_blocks:
            tokens = block(tokens, text, audio, audio_mask, num_frames)
        out = self.proj_out(tokens.transpose(1, 2).reshape(bf, c, h, w))
        return out + x
