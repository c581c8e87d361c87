"""Attention processors for video tokens laid out as ``((b f), n, c)``.

They plug into diffusers' :class:`~diffusers.models.attention_processor.Attention` (same
``to_q/to_k/to_v/to_out`` weights as SD-1.5), so checkpoints are unchanged; only how keys/values are
gathered differs:

* :class:`FirstFrameAttnProcessor`: SD's self-attention ``attn1`` where every frame's queries attend to
  keys/values of frame 0 only (the paper's "FF spatial attention").
* :class:`SharedContextAttnProcessor`: cross-attention on a context shared by all frames of a clip
  (text, or the clip's audio tokens with an optional per-frame boolean mask). Keys/values are
  projected once per clip instead of once per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # B L (h d) -> B h L d


def _attend(
    attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head SDPA on (B, L, inner) projections, then the output projection."""
    out = F.scaled_dot_product_attention(
        _heads(q, attn.heads), _heads(k, attn.heads), _heads(v, attn.heads), attn_mask=mask, scale=attn.scale
    )
    out = out.transpose(1, 2).flatten(2).to(q.dtype)
    return attn.to_out[1](attn.to_out[0](out))


class FirstFrameAttnProcessor:
    """Self-attention with queries from each frame and keys/values from frame 0 of the same clip."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        n = hidden_states.shape[1]
        frames = hidden_states.unflatten(0, (-1, num_frames))  # b f n c
        first = frames[:, 0]
        q = attn.to_q(
            frames.flatten(1, 2)
        )  # every frame of a clip shares the same keys: one sequence per clip
        out = _attend(attn, q, attn.to_k(first), attn.to_v(first))
        return out.unflatten(1, (num_frames, n)).flatten(0, 1)


class SharedContextAttnProcessor:
    """Cross-attention on a per-clip context ``(b, S, D)``; ``attention_mask`` is ``(b, f, S)`` bool or None."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        k, v = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)  # b S inner
        if attention_mask is None:
            n = hidden_states.shape[1]
            q = attn.to_q(hidden_states.unflatten(0, (-1, num_frames)).flatten(1, 2))
            return _attend(attn, q, k, v).unflatten(1, (num_frames, n)).flatten(0, 1)
        q = attn.to_q(hidden_states)  # per frame: each frame has its own key mask
        k, v = k.repeat_interleave(num_frames, 0), v.repeat_interleave(num_frames, 0)
        mask = attention_mask.flatten(0, 1)[:, None, None, :]  # (b f) 1 1 S, True = attend
        return _attend(attn, q, k, v, mask)
