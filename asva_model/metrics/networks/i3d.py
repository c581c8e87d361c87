"""FVD's video feature network: a TorchScript detector with StyleGAN-V's I3D call signature.

The paper uses StyleGAN-V's ``i3d_torchscript.pt`` called as
``detector(videos, rescale=False, resize=False, return_features=True)`` on (B, 3, T, 224, 224) in [-1, 1].
Any TorchScript module with that signature loads; :class:`TinyVideoDetector` is a scriptable tiny one for tests.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from asva_model.weights import WeightsError, existing_path


class TorchScriptVideoDetector(nn.Module):
    """Wraps a TorchScript detector: (B, 3, T, H, W) in [-1, 1] -> features (B, D)."""

    def __init__(self, detector: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        out = self.detector(videos, rescale=False, resize=False, return_features=True)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != videos.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"video detector must return (batch, dim) features, got {shape}")
        return out


def _jit(fn, *args, **kwargs):
    # TorchScript is deprecated in favour of torch.export, but the released I3D only exists as TorchScript.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        return fn(*args, **kwargs)


def load_video_detector(path: str | Path, device: str | torch.device = "cpu") -> TorchScriptVideoDetector:
    """Load a TorchScript detector file (``i3d_torchscript.pt`` or a compatible one), in eval mode."""
    p = existing_path(path, "FVD video detector (i3d_weights)")
    try:
        detector = _jit(torch.jit.load, str(p), map_location=torch.device(device))
    except Exception as err:  # noqa: BLE001 - not a TorchScript archive: say so with the path
        raise WeightsError(f"i3d_weights: {p} is not a TorchScript module: {err}") from None
    return TorchScriptVideoDetector(detector.eval()).to(device).eval().requires_grad_(False)


class TinyVideoDetector(nn.Module):
    """A small random-init 3D conv net with the I3D detector's call signature (tests, smoke runs)."""

    def __init__(self, feature_dim: int = 16, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 4, 4), padding=(1, 3, 3))
        self.proj = nn.Linear(width, feature_dim)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        # The real detector rescales [0,255] -> [-1,1] and resizes to 224 when asked; FVD asks for neither.
        if rescale:
            x = x / 127.5 - 1.0
        h = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        return self.proj(h)


def save_tiny_video_detector(path: str | Path, feature_dim: int = 16, seed: int = 0) -> Path:
    """Script a random-init :class:`TinyVideoDetector` and ``torch.jit.save`` it (the real file format)."""
    torch.manual_seed(seed)
    scripted = _jit(torch.jit.script, TinyVideoDetector(feature_dim).eval())
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _jit(torch.jit.save, scripted, str(p))
    return p
