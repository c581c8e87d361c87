"""`train` config section: Ray Train + DeepSpeed ZeRO training of AVSyncD."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_platform.config import require


@dataclass
class TrainConfig:
    num_workers: int = 8
    """Ray Train workers (one per GPU)."""
    use_gpu: bool = True
    """Give each worker a GPU (NCCL); False trains on CPU with gloo."""
    batch_size_per_worker: int = 4
    """Micro-batch per worker (the paper: 4)."""
    gradient_accumulation_steps: int = 2
    """Micro-batches per optimizer step (the paper: 2; global batch 4 x 8 x 2 = 64)."""
    max_steps: int = 37000
    """Optimizer steps (the released AVSync15 checkpoint is step 37,000)."""
    lr: float = 1e-4
    """AdamW learning rate, constant schedule (the paper: 1e-4)."""
    weight_decay: float = 1e-2
    """AdamW weight decay (the paper: 1e-2)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (the paper: 1.0)."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage, 0-3."""
    precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    """Mixed precision (the paper: fp16 with loss scaling; bf16 preferred on Ampere+)."""
    checkpoint_every: int = 1000
    """Save a checkpoint every N optimizer steps."""
    keep_checkpoints: int = 2
    """Keep the last K checkpoints (plus milestones)."""
    milestone_every: int = 0
    """Also keep every checkpoint whose step is a multiple of this (0 = none)."""
    max_failures: int = 3
    """Worker-failure restarts from the latest checkpoint (FailureConfig)."""
    seed: int = 123
    """Global seed (the paper: 123)."""

    def validate(self) -> None:
        require(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        require(self.batch_size_per_worker >= 1, "batch_size_per_worker", "must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        require(self.max_steps >= 1, "max_steps", "must be >= 1")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.zero_stage in (0, 1, 2, 3), "zero_stage", f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
