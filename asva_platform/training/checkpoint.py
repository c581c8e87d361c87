"""Saving and restoring a DeepSpeed engine in the checkpoint layout of :mod:`asva_platform.artifacts.checkpoint`
(every rank writes its shard; rank 0 adds the trainer state); a checkpoint of another worker count is
resharded through DeepSpeed's universal checkpoint."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from asva_platform.artifacts.checkpoint import DS_TAG, TrainerState
from asva_platform.training.ema import gathered

CHECKSUM_GATHER_ELEMENTS = 50_000_000
"""Under ZeRO-3 the checksum gathers the trainable weights this many elements at a time (200 MB in fp32), not
all at once (1.24 GB per rank for AVSyncD's 310 M: what pushed two full-size CPU ranks out of memory)."""


def trainable_checksum(module: torch.nn.Module, is_rank0: bool) -> str:
    """sha256 over the trainable weights in name order (fp32 bytes); '' on ranks other than 0.
    Collective under ZeRO-3 (weights are gathered, a chunk at a time), so every rank must call it."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    digest = hashlib.sha256()
    for chunk in _chunks(named, CHECKSUM_GATHER_ELEMENTS):
        with gathered([p for _, p in chunk]):
            if is_rank0:
                for name, p in chunk:
                    digest.update(name.encode())
                    digest.update(p.detach().float().cpu().contiguous().numpy())
    return digest.hexdigest() if is_rank0 else ""


def _chunks(named: list, elements: int) -> list[list]:
    """``named`` (name, parameter) pairs cut, in order, into runs of at most ``elements`` (one at least each)."""
    runs: list[list] = [[]]
    size = 0
    for name, p in named:
        numel = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
        if runs[-1] and size + numel > elements:
            runs.append([])
            size = 0
        runs[-1].append((name, p))
        size += numel
    return runs


def save_engine(engine, directory: str | Path, state: TrainerState, is_rank0: bool) -> None:
    """Every rank writes its DeepSpeed shard; rank 0 adds the trainer state."""
    engine.save_checkpoint(str(directory), tag=DS_TAG)
    if is_rank0:
        state.save(directory)


UNIVERSAL_TAG = "ds_universal"
"""Where a checkpoint's world-size-independent copy is written (DeepSpeed's universal checkpoint format)."""


def to_universal(directory: str | Path, out_root: str | Path) -> Path:
    """Convert the DeepSpeed shards under ``<directory>/ds`` to a universal checkpoint at
    ``<out_root>/ds_universal`` (per parameter: fp32 weights and both Adam moments, whole): what lets another
    worker count load them. Runs DeepSpeed's ``ds_to_universal`` in a subprocess (it forks its own pools)."""
    out = Path(out_root) / UNIVERSAL_TAG
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(Path(directory, DS_TAG)),
        "--output_folder",
        str(out),
        "--num_extract_workers",
        "1",
        "--num_merge_workers",
        "1",
        "--inject_missing_state",
    ]  # our engines save no Megatron-style universal info: DeepSpeed's defaults fit
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(
            f"{directory}: converting the ZeRO shards to a universal checkpoint failed: {tail[0]}"
        )
    return out


def load_engine(engine, directory: str | Path, world_size: int, zero_stage: int) -> TrainerState:
    """Restore model, optimizer, LR scheduler and step from a checkpoint directory (every rank). Shards of
    another worker count (ZeRO 1-3) are converted to a universal checkpoint in a scratch folder first and
    loaded from it; ZeRO-0 checkpoints hold the whole state in every file and load at any worker count."""
    state = TrainerState.load(directory)
    if state.zero_stage != zero_stage:
        raise ValueError(
            f"checkpoint {directory} was written with ZeRO stage {state.zero_stage}, "
            f"this run uses {zero_stage}; set train.zero_stage={state.zero_stage}"
        )
    reshard = zero_stage > 0 and state.world_size and state.world_size != world_size
    with tempfile.TemporaryDirectory(prefix="asva-universal-") as scratch:
        load_dir, tag = str(directory), DS_TAG
        if reshard:
            load_dir, tag = scratch, to_universal(directory, scratch).name
        engine._config.load_universal_checkpoint = bool(reshard)  # read only by load_checkpoint
        try:
            path, _ = engine.load_checkpoint(
                load_dir, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        finally:
            engine._config.load_universal_checkpoint = False
    if path is None:
        raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint under tag {DS_TAG!r}")
    if engine.global_steps != state.step:
        raise ValueError(
            f"{directory}: DeepSpeed is at step {engine.global_steps}, trainer state says {state.step}"
        )
    return state


def resharded_position(batches_in_epoch: int, saved_world: int, world: int) -> int:
    """Micro-batches each of ``world`` ranks skips to continue an epoch that ``saved_world`` ranks were
    ``batches_in_epoch`` micro-batches into: the same number of clips, at the same per-worker batch size.
    Which clips each rank sees from there follows the new sharding."""
    if not saved_world or saved_world == world:
        return batches_in_epoch
    return batches_in_epoch * saved_world // world
