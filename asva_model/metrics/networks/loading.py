"""Reading weight files with errors that name the config key, never downloading anything."""

from __future__ import annotations

from pathlib import Path

import torch


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or FileNotFoundError naming what it should hold (no download is attempted)."""
    p = Path(path).expanduser()
    if not str(path) or not p.exists():
        raise FileNotFoundError(f"{what}: {path!s} does not exist (weights are never downloaded; "
                                "copy them there or point the config at them)")
    return p


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A plain state dict saved with ``torch.save`` (tensors only; pickled code is refused)."""
    p = existing_path(path, what)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt file, pickle with code, ...: one clear message
        raise ValueError(f"{what}: cannot read {p} as a state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what}: {p} is not a state dict of tensors")
    return state
