"""Saving and restoring a DeepSpeed engine in the checkpoint layout of :mod:`asva_platform.artifacts.checkpoint`
(every rank writes its shard; rank 0 adds the trainer state)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from asva_platform.artifacts.checkpoint import DS_TAG, TrainerState
from asva_platform.training.ema import gathered


def trainable_checksum(module: torch.nn.Module, is_rank0: bool) -> str:
    """sha256 over the trainable weights in name order (fp32 bytes); '' on ranks other than 0.
    Collective under ZeRO-3 (weights are gathered), so every rank must call it."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    digest = hashlib.sha256()
    with gathered([p for _, p in named]):
        if is_rank0:
            for name, p in named:
                digest.update(name.encode())
                digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest() if is_rank0 else ""


def save_engine(engine, directory: str | Path, state: TrainerState, is_rank0: bool) -> None:
    """Every rank writes its DeepSpeed shard; rank 0 adds the trainer state."""
    engine.save_checkpoint(str(directory), tag=DS_TAG)
    if is_rank0:
        state.save(directory)


def load_engine(engine, directory: str | Path, world_size: int, zero_stage: int) -> TrainerState:
    """Restore model, optimizer, LR scheduler and step from a checkpoint directory (every rank)."""
    state = TrainerState.load(directory)
    if state.world_size and state.world_size != world_size and zero_stage > 0:
        raise ValueError(f"checkpoint {directory} holds ZeRO shards of {state.world_size} ranks but this run has "
                         f"{world_size}; resume with train.num_workers={state.world_size}")
    if state.zero_stage != zero_stage:
        raise ValueError(f"checkpoint {directory} was written with ZeRO stage {state.zero_stage}, "
                         f"this run uses {zero_stage}; set train.zero_stage={state.zero_stage}")
    path, _ = engine.load_checkpoint(str(directory), tag=DS_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint under tag {DS_TAG!r}")
    if engine.global_steps != state.step:
        raise ValueError(f"{directory}: DeepSpeed is at step {engine.global_steps}, trainer state says {state.step}")
    return state
