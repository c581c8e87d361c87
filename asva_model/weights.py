"""Reading weight files and loading them strictly, with one-line errors; nothing is ever downloaded.

* :func:`existing_path`, :func:`load_state_dict_file` (a ``torch.save`` state dict) and
  :func:`load_weights_file` (a diffusers model folder's weights) read files;
* :func:`load_strict` puts a state dict into a module (ordinary or on ``meta``) and refuses weights that do
  not fit: one error naming the source and the first missing, unexpected and mis-shaped keys;
* :func:`from_pretrained_strict` is diffusers' ``from_pretrained`` for our own ``save_pretrained`` folders,
  with the same refusal (diffusers itself only warns about missing or unused weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from asva_model.errors import AsvaError

M = TypeVar("M", bound=nn.Module)

SHOWN_KEYS = 3
"""How many keys of each kind a mismatch error lists."""


class WeightsError(AsvaError, ValueError):
    """Weights that do not fit the module they are loaded into, or a file that holds no usable weights."""


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or FileNotFoundError naming what it should hold (no download is attempted)."""
    p = Path(path).expanduser()
    if not str(path) or not p.exists():
        raise FileNotFoundError(
            f"{what}: {path!s} does not exist (weights are never downloaded; "
            "copy them there or point the config at them)"
        )
    return p


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A plain state dict saved with ``torch.save`` (tensors only; pickled code is refused)."""
    p = existing_path(path, what)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt file, pickle with code, ...: one clear message
        raise WeightsError(f"{what}: cannot read {p} as a state dict: {_one_line(err)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what}: {p} is not a state dict of tensors")
    return state


def load_weights_file(folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a diffusers model folder: ``*.safetensors`` preferred, else ``*.bin``."""
    folder = Path(folder)
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return load_safetensors(str(folder / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return torch.load(folder / name, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no diffusion_pytorch_model.safetensors or .bin weights")


def load_strict(module: M, state_dict: Mapping[str, torch.Tensor], source: str) -> M:
    """Load ``state_dict`` into ``module``: every key present, none extra, every shape equal; returns ``module``.

    A module built on ``meta`` takes the tensors themselves (``assign``). Raises :class:`WeightsError`
    (a ValueError) ``"<source>: weights do not fit <Class> (missing [...], unexpected [...], ...)"``.
    """
    own = module.state_dict()
    mismatched = sorted(k for k in own.keys() & state_dict.keys() if own[k].shape != state_dict[k].shape)
    if mismatched:
        raise _not_fitting(
            source,
            module,
            sorted(own.keys() - state_dict.keys()),
            sorted(state_dict.keys() - own.keys()),
            mismatched,
        )
    on_meta = any(t.is_meta for t in own.values())
    try:
        # strict=False: torch reports what is missing/unexpected (a BatchNorm may omit num_batches_tracked)
        result = module.load_state_dict(state_dict, strict=False, assign=on_meta)
    except RuntimeError as err:
        raise WeightsError(
            f"{source}: weights do not fit {type(module).__name__}: {_one_line(err)}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise _not_fitting(source, module, sorted(result.missing_keys), sorted(result.unexpected_keys), [])
    return module


def from_pretrained_strict(cls: type[M], folder: str | Path, source: str | None = None) -> M:
    """``cls.from_pretrained(folder)`` (a folder written by ``save_pretrained``) that refuses weights that do
    not fit, like :func:`load_strict`."""
    source = source or str(folder)
    try:  # ignore_mismatched_sizes: mis-shaped weights are reported in `info` (and refused below), not raised
        model, info = cls.from_pretrained(
            str(folder), output_loading_info=True, low_cpu_mem_usage=False, ignore_mismatched_sizes=True
        )
    except (RuntimeError, ValueError) as err:
        raise WeightsError(f"{source}: weights do not fit {cls.__name__}: {_one_line(err)}") from None
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    mismatched = sorted(k for k, *_ in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        raise _not_fitting(source, model, missing, unexpected, mismatched)
    return model


def _not_fitting(
    source: str, module: nn.Module, missing: list[str], unexpected: list[str], mismatched: list[str]
) -> WeightsError:
    parts = [f"missing {_head(missing)}", f"unexpected {_head(unexpected)}"]
    if mismatched:
        parts.append(f"shape mismatch {_head(mismatched)}")
    return WeightsError(f"{source}: weights do not fit {type(module).__name__} ({', '.join(parts)})")


def _head(keys: list[str]) -> str:
    more = f" +{len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{keys[:SHOWN_KEYS]}{more}"


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) + (" ..." if len(lines) > 2 else "") if lines else type(err).__name__
