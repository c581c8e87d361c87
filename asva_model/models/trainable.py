"""Which parameters train: the paper trains only modules whose qualified name contains ``_temp`` or
``_audio`` (FF temporal convs, temporal attention + its position MLP and norm, audio cross-attention
and its norm); everything from SD-1.5 stays frozen.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

NEW_MODULE_PATTERNS = ("_temp", "_audio")
"""Name fragments of the modules AVSyncD adds to SD-1.5 (kept at init when inflating 2D weights)."""

PARAM_GROUPS = {
    "ff_temporal_conv": ("conv_temp",),
    "temporal_attn": ("attn_temp", "norm_temp", "pos_embedding_temp"),
    "audio_cross_attn": ("attn_audio", "norm_audio"),
}
"""UNet parameter groups of the paper's table (supp. Table 2); the rest of the UNet is `unet2d`."""


ALL_MODULES = "*"
"""A ``trainable_modules`` entry that matches every parameter: a UNet trained from random init (the toy
recipe) must train its 2D parts too, since there is no pretrained SD-1.5 to keep."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(p == ALL_MODULES or p in name for p in patterns)


def trainable_parameter_names(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of the parameters whose qualified name contains any of ``patterns``."""
    patterns = tuple(patterns)
    return [name for name, _ in model.named_parameters() if _matches(name, patterns)]


def apply_trainable(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Freeze everything, then unfreeze parameters matching ``patterns``; returns the trainable names.

    Raises ValueError if nothing matches (a typo would otherwise train nothing silently).
    """
    names = set(trainable_parameter_names(model, patterns))
    if not names:
        raise ValueError(f"trainable_modules {list(patterns)} match no parameter of {type(model).__name__}")
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    return sorted(names)


def parameter_group(name: str) -> str:
    """`ff_temporal_conv`, `temporal_attn`, `audio_cross_attn` or `unet2d` for a UNet parameter name."""
    for group, fragments in PARAM_GROUPS.items():
        if _matches(name, fragments):
            return group
    return "unet2d"
