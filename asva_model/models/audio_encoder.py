"""Frozen audio encoders that turn a normalised log-mel spectrogram into per-clip tokens.

:class:`AudioEncoder` is the pluggable interface the UNet, objective and pipeline rely on: ``encode``
(mel -> (b, S, D) fp32 tokens), ``segment_mask`` (which tokens each video frame may attend to) and
``null_audio_tokens`` (the encoding of an all-zero normalised mel, used for classifier-free guidance).

:class:`ImageBindAudioEncoder` is ImageBind-Huge's audio branch (16x16 patch stem with stride 10 on the
128 x 204 mel -> 12 x 19 patches + CLS = 229 tokens; 12 pre-norm blocks of width 768 with 12 heads and
learned key/value bias; stochastic depth up to 0.1) plus the extra LayerNorm AVSyncD puts on the
last-layer tokens. Module names follow ImageBind's audio modality (``preprocessor``/``trunk``/``head``/
``postprocessor``), which is also the layout of the authors' saved ``modules/audio_encoder``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from asva_model.models.imagebind import Trunk, audio_preprocessor, cls_head, patch_grid_size
from asva_model.weights import WeightsError, load_state_dict_file, load_strict, load_weights_file

# ImageBind checkpoint prefixes of the audio modality -> our module names.
IMAGEBIND_AUDIO_PREFIXES = {
    "modality_preprocessors.audio.": "preprocessor.",
    "modality_trunks.audio.": "trunk.",
    "modality_heads.audio.": "head.",
    "modality_postprocessors.audio.": "postprocessor.",
}


def segment_mask(
    num_frames: int, freq_patches: int, time_patches: int, with_cls: bool = True
) -> torch.Tensor:
    """Boolean (num_frames, [1 +] freq_patches * time_patches): the audio tokens frame k attends to.

    The time axis is split into ``num_frames`` windows of ``ceil(time_patches / num_frames)`` patch
    columns whose starts are evenly spaced (rounded) from 0 to ``time_patches - width``; each frame sees
    all frequency rows of its window, plus the CLS token. Tokens are ordered frequency-major (row f,
    column t -> 1 + f * time_patches + t), as ImageBind flattens its (freq, time) patch grid.
    For 12 frames and 12 x 19 patches: width 2, starts [0,2,3,5,6,8,9,11,12,14,15,17], 25 of 229 tokens.
    """
    if num_frames < 1 or time_patches < 1 or freq_patches < 1:
        raise ValueError(
            f"segment_mask needs positive sizes, got {num_frames}, {freq_patches}, {time_patches}"
        )
    width = math.ceil(time_patches / num_frames)
    starts = np.round(np.linspace(0, time_patches - width, num_frames)).astype(int)
    cols = torch.zeros(num_frames, time_patches, dtype=torch.bool)
    for k, s in enumerate(starts):
        cols[k, s : s + width] = True
    grid = cols[:, None, :].expand(num_frames, freq_patches, time_patches).reshape(num_frames, -1)
    if with_cls:
        grid = torch.cat([torch.ones(num_frames, 1, dtype=torch.bool), grid], dim=1)
    return grid


class AudioEncoder(nn.Module):
    """Interface of a frozen audio backbone; subclasses implement ``encode`` and ``patch_grid``."""

    has_cls_token: bool = True

    @property
    def token_dim(self) -> int:
        raise NotImplementedError

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(frequency patches, time patches) of the token grid."""
        raise NotImplementedError

    @property
    def mel_shape(self) -> tuple[int, int]:
        """(mel bins, mel frames) the encoder expects."""
        raise NotImplementedError

    @property
    def num_tokens(self) -> int:
        f, t = self.patch_grid
        return f * t + int(self.has_cls_token)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """(b, 1, bins, frames) normalised log-mel -> (b, num_tokens, token_dim) fp32 tokens."""
        raise NotImplementedError

    def segment_mask(self, num_frames: int) -> torch.Tensor:
        """(num_frames, num_tokens) bool, on the encoder's device."""
        f, t = self.patch_grid
        return segment_mask(num_frames, f, t, self.has_cls_token).to(self._device())

    @torch.no_grad()
    def null_audio_tokens(self) -> torch.Tensor:
        """(1, num_tokens, token_dim): the encoding of an all-zero *normalised* mel (the dataset-mean
        log-mel, not silence), used for audio classifier-free guidance."""
        bins, frames = self.mel_shape
        return self.encode(torch.zeros(1, 1, bins, frames, device=self._device()))

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class _LogitScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(20.0)))  # ImageBind audio: fixed 20


class _Postprocessor(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Identity(), _LogitScale())


class ImageBindAudioEncoder(ModelMixin, AudioEncoder, ConfigMixin):
    """ImageBind-Huge audio branch + AVSyncD's extra (identity-initialised, frozen) token LayerNorm."""

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 768,
        num_blocks: int = 12,
        num_heads: int = 12,
        head_out_dim: int = 1024,
        patch_size: int = 16,
        patch_stride: int = 10,
        num_mel_bins: int = 128,
        target_length: int = 204,
        drop_path: float = 0.1,
        drop_path_layout: str = "per_sample",
    ) -> None:
        super().__init__()
        self._grid = patch_grid_size(num_mel_bins, target_length, patch_size, patch_stride)
        self.preprocessor = audio_preprocessor(
            embed_dim, patch_size, patch_stride, num_mel_bins, target_length
        )
        self.trunk = Trunk(
            embed_dim,
            num_blocks,
            num_heads,
            add_bias_kv=True,
            drop_path=drop_path,
            drop_path_layout=drop_path_layout,
        )
        self.head = cls_head(
            embed_dim, head_out_dim
        )  # ImageBind's pooled embedding: unused, kept for strict loading
        self.postprocessor = _Postprocessor()
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=1e-6)

    @property
    def token_dim(self) -> int:
        return self.config.embed_dim

    @property
    def patch_grid(self) -> tuple[int, int]:
        return self._grid

    @property
    def mel_shape(self) -> tuple[int, int]:
        return self.config.num_mel_bins, self.config.target_length

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 4 or tuple(mel.shape[1:]) != (1, *self.mel_shape):
            raise ValueError(
                f"mel must be (b, 1, {self.mel_shape[0]}, {self.mel_shape[1]}), got {tuple(mel.shape)}"
            )
        dtype = self.final_layer_norm.weight.dtype
        tokens = self.trunk(self.preprocessor(mel.to(dtype)))  # last-layer tokens, before the head
        return self.final_layer_norm(tokens).float()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encode(mel)

    # ------------------------------------------------------------------------------------------
    # Loading

    def load_weights(self, path: str | Path) -> None:
        """Load ImageBind's checkpoint (``imagebind_huge.pth``; only the audio keys are used) or a saved
        encoder folder (ours / the authors' ``modules/audio_encoder``). Strict: every weight must fit.

        The extra ``final_layer_norm`` is absent from ImageBind's file and keeps its identity init.
        """
        path = Path(path)
        if path.is_dir():
            state = load_weights_file(path)
        else:
            raw = load_state_dict_file(path, "audio encoder weights (model.audio_encoder_weights)")
            state = {}
            for key, value in raw.items():
                for prefix, ours in IMAGEBIND_AUDIO_PREFIXES.items():
                    if key.startswith(prefix):
                        state[ours + key[len(prefix) :]] = value
            if not state:
                raise WeightsError(
                    f"{path}: no ImageBind audio weights (keys starting with 'modality_*.audio.')"
                )
            for key, value in self.final_layer_norm.state_dict().items():
                state.setdefault(f"final_layer_norm.{key}", value)
        load_strict(self, state, f"{path} (audio encoder)")
