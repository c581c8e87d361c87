"""EMA of the trainable weights, held in fp32 by rank 0 only.

Kept on the weights' device (no host copies per step). Under ZeRO-0/1/2 every rank has the full weights, so rank 0 updates from its own copy. Under ZeRO-3
the weights are partitioned: every rank joins a gather of the trainable weights (a collective), rank 0
updates, and the partitions are released again. ``train.ema_update_every`` amortises that gather.
Saved as ``ema.pt`` (name -> tensor) in rank 0's part of each checkpoint, so export can overlay it on
the consolidated weights without knowing anything about ZeRO partitions.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from asva_platform.training.deepspeed_setup import is_partitioned

EMA_FILE = "ema.pt"


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter]):
    """Full (unpartitioned) values of ``params`` on every rank for the duration (collective under ZeRO-3)."""
    if any(is_partitioned(p) for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


class TrainableEMA:
    def __init__(self, module: torch.nn.Module, decay: float, is_rank0: bool) -> None:
        self.decay = decay
        self.is_rank0 = is_rank0
        self.named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.shadow: dict[str, torch.Tensor] = {}
        if is_rank0 or any(is_partitioned(p) for _, p in self.named):
            with gathered([p for _, p in self.named]):
                if is_rank0:
                    self.shadow = {n: p.detach().float().clone() for n, p in self.named}

    @torch.no_grad()
    def update(self) -> None:
        """Call on every rank (the ZeRO-3 gather is collective); only rank 0 holds the average."""
        with gathered([p for _, p in self.named]):
            if self.is_rank0:
                for name, p in self.named:
                    self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    def save(self, directory: str | Path) -> None:
        if self.is_rank0:
            torch.save({n: t.cpu() for n, t in self.shadow.items()}, Path(directory) / EMA_FILE)

    def load(self, directory: str | Path) -> None:
        if not self.is_rank0:
            return
        path = Path(directory) / EMA_FILE
        if not path.is_file():  # a checkpoint from a run without EMA: start the average from here
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"{path}: EMA state lacks {missing[:3]} (trainable_modules changed?)")
        self.shadow = {n: state[n].float().to(t.device) for n, t in self.shadow.items()}
