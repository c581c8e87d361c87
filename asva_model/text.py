"""Precomputed CLIP-L text encodings (the class prompt is AVSyncD's only text; it is never dropped).

AVSync15 ships ``class_clip_text_encodings_stable-diffusion-v1-5.pt``: a dict prompt -> (77, 768)
tensor (TheGreatestHits ships a single tensor used for every clip). The empty-prompt encoding
``openai-clip-l_null_text_encoding.pt`` (1, 77, 768) is only needed for text guidance != 1.
"""

from __future__ import annotations

from pathlib import Path

import torch


class TextEncodings:
    """Prompt -> (77, D) encodings; ``lookup(prompts)`` stacks them into (b, 77, D)."""

    def __init__(self, table: dict[str, torch.Tensor] | torch.Tensor, source: str = "<memory>") -> None:
        self.source = source
        self.single = table if isinstance(table, torch.Tensor) else None
        self.table = {} if self.single is not None else {str(k): v for k, v in table.items()}
        for name, enc in ({"*": self.single} if self.single is not None else self.table).items():
            if not isinstance(enc, torch.Tensor) or enc.squeeze(0).ndim != 2:
                raise ValueError(
                    f"{source}: encoding for {name!r} must be a (tokens, dim) tensor, got "
                    f"{getattr(enc, 'shape', type(enc).__name__)}"
                )

    @property
    def dim(self) -> int:
        enc = self.single if self.single is not None else next(iter(self.table.values()))
        return enc.shape[-1]

    @property
    def prompts(self) -> list[str]:
        return sorted(self.table)

    def get(self, prompt: str) -> torch.Tensor:
        if self.single is not None:
            return self.single.squeeze(0).float()
        if prompt not in self.table:
            known = ", ".join(repr(p) for p in self.prompts[:6])
            raise KeyError(f"{self.source}: no text encoding for prompt {prompt!r} (known: {known}...)")
        return self.table[prompt].squeeze(0).float()

    def lookup(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([self.get(p) for p in prompts])


def load_text_encodings(path: str | Path, expected_dim: int | None = None) -> TextEncodings:
    """Read a ``.pt`` prompt -> encoding dict (or single tensor); checks the width if given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text encodings file not found")
    enc = TextEncodings(torch.load(path, map_location="cpu", weights_only=True), str(path))
    if expected_dim is not None and enc.dim != expected_dim:
        raise ValueError(f"{path}: encodings have width {enc.dim}, the UNet expects {expected_dim}")
    return enc


def load_null_text_encoding(path: str | Path, expected_dim: int | None = None) -> torch.Tensor:
    """The empty-prompt encoding as (1, 77, D) fp32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: null text encoding file not found")
    enc = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(enc, torch.Tensor) or enc.numel() % enc.shape[-1] != 0:
        raise ValueError(f"{path}: expected a (1, 77, dim) tensor")
    enc = enc.reshape(1, -1, enc.shape[-1]).float()
    if expected_dim is not None and enc.shape[-1] != expected_dim:
        raise ValueError(f"{path}: null encoding has width {enc.shape[-1]}, the UNet expects {expected_dim}")
    return enc
