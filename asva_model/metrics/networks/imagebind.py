"""ImageBind's vision, text and audio encoders (IA / IT / AlignSync), loadable from ``imagebind_huge.pth``.

Only the three modalities the metrics use are built; module names follow the released checkpoint
(``modality_preprocessors.<m>``, ``modality_trunks.<m>``, ``modality_heads.<m>``), so its state dict
loads after dropping the other modalities' keys. All sizes except the head counts are read from the
weights, so a tiny random-init checkpoint in the same format loads through the same code. The
transformer trunks, patch stems and CLS heads are :mod:`asva_model.models.imagebind`'s, the same code the
AVSyncD audio encoder runs.

Embeddings are unit-norm: the paper's IA/IT divide ImageBind's audio/text outputs by their logit scale,
which leaves the L2-normalised vectors; cosine similarity is then a dot product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from asva_model.errors import require
from asva_model.metrics.networks.bpe import BPETokenizer
from asva_model.models.imagebind import PatchPreprocessor, PatchStem, Trunk, audio_preprocessor, cls_head
from asva_model.weights import WeightsError, load_state_dict_file, load_strict

MODALITIES = ("vision", "text", "audio")


@dataclass(frozen=True)
class ImageBindConfig:
    vision_dim: int = 1280
    vision_blocks: int = 32
    vision_heads: int = 16
    vision_patch: int = 14
    image_size: int = 224
    text_dim: int = 1024
    text_blocks: int = 24
    text_heads: int = 16
    vocab_size: int = 49408
    context_length: int = 77
    audio_dim: int = 768
    audio_blocks: int = 12
    audio_heads: int = 12
    audio_kernel: int = 16
    audio_stride: int = 10
    mel_bins: int = 128
    mel_frames: int = 204
    out_dim: int = 1024
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        # the head counts come from the config (imagebind_num_heads), the widths from the weights
        for dim, heads, name in (
            (self.vision_dim, self.vision_heads, "vision"),
            (self.text_dim, self.text_heads, "text"),
            (self.audio_dim, self.audio_heads, "audio"),
        ):
            require(
                heads >= 1 and dim % heads == 0,
                "imagebind_num_heads",
                f"{name} width {dim} is not divisible by {heads} heads",
            )

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], num_heads: Sequence[int]) -> ImageBindConfig:
        """Sizes read from a checkpoint; ``num_heads`` = [vision, text, audio] (not stored in weights)."""
        pre, trunk, head = "modality_preprocessors.", "modality_trunks.", "modality_heads."

        def blocks(m: str) -> int:
            ids = {int(k.split(".")[3]) for k in state if k.startswith(f"{trunk}{m}.blocks.")}
            return max(ids) + 1 if ids else 0

        vision_conv = state[f"{pre}vision.rgbt_stem.proj.1.weight"]  # (D, 3, 2, p, p)
        vision_tokens = state[f"{pre}vision.pos_embedding_helper.pos_embed"].shape[1] - 1
        audio_conv = state[f"{pre}audio.rgbt_stem.proj.weight"]  # (D, 1, k, k)
        text_pos = state[f"{pre}text.pos_embed"]
        patch = vision_conv.shape[-1]
        return cls(
            vision_dim=vision_conv.shape[0],
            vision_blocks=blocks("vision"),
            vision_heads=num_heads[0],
            vision_patch=patch,
            image_size=math.isqrt(vision_tokens) * patch,
            text_dim=text_pos.shape[-1],
            text_blocks=blocks("text"),
            text_heads=num_heads[1],
            vocab_size=state[f"{pre}text.token_embedding.weight"].shape[0],
            context_length=text_pos.shape[1],
            audio_dim=audio_conv.shape[0],
            audio_blocks=blocks("audio"),
            audio_heads=num_heads[2],
            audio_kernel=audio_conv.shape[-1],
            out_dim=state[f"{head}vision.2.weight"].shape[0],
            mlp_ratio=state[f"{trunk}vision.blocks.0.mlp.fc1.weight"].shape[0] // vision_conv.shape[0],
        )


class _RepeatAsTwoFrames(nn.Module):
    """An image becomes a 2-frame video so the (2, p, p) patch conv sees it (ImageBind's image-as-video stem)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.unsqueeze(2).repeat(1, 1, 2, 1, 1)


class _TextPreprocessor(nn.Module):
    def __init__(self, vocab_size: int, context_length: int, dim: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, dim) * 0.01)
        self.register_buffer("mask", torch.full((context_length, context_length), float("-inf")).triu(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed


class _SelectEOSAndProject(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # The EOT token has the largest id in each row, so argmax finds the sequence end.
        return self.proj(x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)])


class ImageBindEncoders(nn.Module):
    """ImageBind vision/text/audio encoders -> unit-norm embeddings in the shared space."""

    def __init__(self, cfg: ImageBindConfig = ImageBindConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.vision_patch
        vision_patches = (cfg.image_size // p) ** 2
        self.modality_preprocessors = nn.ModuleDict(
            {
                "vision": PatchPreprocessor(
                    PatchStem(
                        nn.Sequential(
                            _RepeatAsTwoFrames(),
                            nn.Conv3d(3, cfg.vision_dim, (2, p, p), stride=(2, p, p), bias=False),
                        )
                    ),
                    vision_patches,
                    cfg.vision_dim,
                ),
                "text": _TextPreprocessor(cfg.vocab_size, cfg.context_length, cfg.text_dim),
                "audio": audio_preprocessor(
                    cfg.audio_dim, cfg.audio_kernel, cfg.audio_stride, cfg.mel_bins, cfg.mel_frames
                ),
            }
        )
        self.modality_trunks = nn.ModuleDict(
            {
                "vision": Trunk(
                    cfg.vision_dim, cfg.vision_blocks, cfg.vision_heads, cfg.mlp_ratio, pre_ln=True
                ),
                "text": Trunk(cfg.text_dim, cfg.text_blocks, cfg.text_heads, cfg.mlp_ratio),
                "audio": Trunk(
                    cfg.audio_dim, cfg.audio_blocks, cfg.audio_heads, cfg.mlp_ratio, add_bias_kv=True
                ),
            }
        )
        self.modality_heads = nn.ModuleDict(
            {
                "vision": cls_head(cfg.vision_dim, cfg.out_dim),
                "text": _SelectEOSAndProject(cfg.text_dim, cfg.out_dim),
                "audio": cls_head(cfg.audio_dim, cfg.out_dim),
            }
        )

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised, S = image_size (224) -> (B, out_dim) unit-norm."""
        s = self.cfg.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"ImageBind images must be (B, 3, {s}, {s}), got {tuple(images.shape)}")
        x = self.modality_trunks["vision"](self.modality_preprocessors["vision"](images))
        return F.normalize(self.modality_heads["vision"](x), dim=-1)

    def encode_text_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, context_length) token ids -> (B, out_dim) unit-norm."""
        pre = self.modality_preprocessors["text"]
        x = self.modality_trunks["text"](pre(ids), attn_mask=pre.mask)
        return F.normalize(self.modality_heads["text"](x, ids), dim=-1)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, mel_bins, mel_frames) normalised log-mel -> (B, out_dim) unit-norm."""
        shape = (1, self.cfg.mel_bins, self.cfg.mel_frames)
        if mel.ndim != 4 or tuple(mel.shape[1:]) != shape:
            raise ValueError(
                f"ImageBind audio must be (B, {', '.join(map(str, shape))}) mel, got {tuple(mel.shape)}"
            )
        x = self.modality_trunks["audio"](self.modality_preprocessors["audio"](mel))
        return F.normalize(self.modality_heads["audio"](x), dim=-1)


def _own_keys(key: str) -> bool:
    parts = key.split(".")
    return (
        len(parts) > 1
        and parts[0] in ("modality_preprocessors", "modality_trunks", "modality_heads")
        and parts[1] in MODALITIES
    )


def load_imagebind(
    path: str | Path, num_heads: Sequence[int] = (16, 16, 12), device: str | torch.device = "cpu"
) -> ImageBindEncoders:
    """Build the vision/text/audio encoders from an ImageBind checkpoint (other modalities' keys are ignored)."""
    full = load_state_dict_file(path, what="ImageBind weights (imagebind_weights)")
    state = {k: v for k, v in full.items() if _own_keys(k)}
    try:
        cfg = ImageBindConfig.from_state_dict(state, num_heads)
    except KeyError as err:
        raise WeightsError(
            f"imagebind_weights: {path} is not an ImageBind checkpoint (missing {err.args[0]})"
        ) from None
    model = load_strict(ImageBindEncoders(cfg), state, f"imagebind_weights: {path}")
    return model.to(device).eval().requires_grad_(False)


class ImageBindEmbedder(nn.Module):
    """The IA/IT embedding interface over ImageBind: embed_image / embed_text / embed_audio, all unit-norm."""

    def __init__(self, encoders: ImageBindEncoders, tokenizer: BPETokenizer | None) -> None:
        super().__init__()
        self.encoders = encoders
        self.tokenizer = tokenizer
        if tokenizer is not None and tokenizer.vocab_size != encoders.cfg.vocab_size:
            raise ValueError(
                f"imagebind_bpe: tokenizer has {tokenizer.vocab_size} tokens but the text encoder "
                f"embeds {encoders.cfg.vocab_size}; the merges file does not belong to these weights"
            )
        if tokenizer is not None:
            tokenizer.context_length = encoders.cfg.context_length

    @property
    def image_size(self) -> int:
        return self.encoders.cfg.image_size

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoders.encode_image(images)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("imagebind_bpe: no tokenizer loaded, so text (IT) cannot be embedded")
        device = next(self.encoders.parameters()).device
        return self.encoders.encode_text_ids(self.tokenizer(list(texts)).to(device))

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoders.encode_audio(mel)
