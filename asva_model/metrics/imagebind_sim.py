"""IA and IT: ImageBind cosine similarity of each generated frame 2..12 with the clip's audio / class text.

As the paper's code: frames resized bicubic (antialiased) to 224x224 and CLIP-normalised; embeddings
unit-norm (audio and text divided by ImageBind's logit scale); per-clip score = mean cosine over frames
2..12; reported = mean over clips x 100. The text is what the caller passes: the paper used the class
folder name with underscores (e.g. ``baby_babbling_crying``) for AVSync15.
"""

from __future__ import annotations

import numpy as np
import torch

from asva_model.metrics.networks import Embedder
from asva_model.metrics.networks.preprocess import clip_normalize, resize_bicubic, run_batched


def imagebind_inputs(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size) CLIP-normalised."""
    return clip_normalize(resize_bicubic(frames, size))


def image_embeddings(
    frames: torch.Tensor, embedder: Embedder, batch_size: int = 32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Unit-norm ImageBind embeddings (N, D) of frames (N, 3, H, W) in [0, 1]."""
    size = embedder.image_size
    return run_batched(lambda b: embedder.embed_image(imagebind_inputs(b, size)), frames, batch_size, device)


def audio_embeddings(
    mels: torch.Tensor, embedder: Embedder, batch_size: int = 32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Unit-norm ImageBind embeddings (B, D) of normalised log-mels (B, 1, 128, 204)."""
    return run_batched(embedder.embed_audio, mels, batch_size, device)


def text_embeddings(texts: list[str], embedder: Embedder, device: torch.device | str = "cpu") -> torch.Tensor:
    """Unit-norm ImageBind embeddings (len(texts), D); each distinct text is embedded once."""
    unique = sorted(set(texts))
    with torch.inference_mode():
        table = embedder.embed_text(unique).float().cpu()
    index = {t: i for i, t in enumerate(unique)}
    return table[[index[t] for t in texts]]


def cosine_to(frame_embeddings: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Cosines (N,) between unit-norm frame embeddings (N, D) and one unit-norm target (D,)."""
    return (frame_embeddings @ target).numpy().astype(np.float64)
