"""DeepSpeed for AVSyncD: the engine config from the typed ``train`` section, and engine construction.

* Only trainable parameters go to the (torch) AdamW: no DeepSpeed fused-Adam JIT build, and frozen
  SD-1.5 weights carry no optimizer state. Frozen weights stay inside the engine's module, so ZeRO-3
  partitions them too (the VAE and audio encoder are never in the engine).
* bf16: DeepSpeed 0.19 casts parameters but not buffers, so ``data_types.buffer_dtype`` is set (the
  temporal position embeddings are buffers).
* fp16: dynamic loss scaling; fp32: plain.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from asva_platform.training.config import TrainConfig

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config for ``world_size`` data-parallel ranks."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.use_gpu and train.zero_stage > 0:
        zero.update(overlap_comm=True, contiguous_gradients=True)
    if train.zero_stage >= 2:
        zero["reduce_bucket_size"] = train.reduce_bucket_size
    if train.zero_stage == 3:
        # Exported weights come from the checkpoint (zero_to_fp32), not a gathered 16-bit copy on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
        zero["stage3_max_live_parameters"] = train.zero3_max_live_parameters
        zero["stage3_max_reuse_distance"] = train.zero3_max_reuse_distance
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size_per_worker,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": train.batch_size_per_worker * train.gradient_accumulation_steps * world_size,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # a torch AdamW instead of DeepSpeed's JIT-built fused Adam
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
        cfg["data_types"] = {"buffer_dtype": "bf16"}
    elif train.precision == "fp16":
        cfg["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": train.fp16_initial_scale_power,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    return cfg


def skip_shm_comm_build() -> None:
    """DeepSpeed JIT-compiles a shared-memory allreduce op (~30 s) on first init; it only serves inference."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check model.trainable_modules)")
    return torch.optim.AdamW(
        params,
        lr=train.lr,
        betas=tuple(train.adam_betas),
        eps=train.adam_eps,
        weight_decay=train.weight_decay,
    )


def make_lr_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig):
    """Constant learning rate after an optional linear warm-up (the paper: constant, no warm-up)."""
    warmup = train.lr_warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )


def initialize_engine(model: torch.nn.Module, train: TrainConfig, world_size: int):
    """``deepspeed.initialize`` over an already-initialised process group (Ray Train sets it up)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if train.use_gpu else "cpu")
    skip_shm_comm_build()
    import deepspeed

    optimizer = make_optimizer(model, train)
    scheduler = make_lr_scheduler(optimizer, train)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(train, world_size),
        dist_init_required=False,
    )
    return engine


def is_partitioned(param: torch.nn.Parameter) -> bool:
    """True for a ZeRO-3 parameter (its data lives in ``ds_tensor`` partitions across ranks)."""
    return hasattr(param, "ds_id")


@dataclass
class StateBreakdown:
    """Bytes one rank holds for the engine, by what they are (each storage counted once)."""

    params: int = 0
    """The module's weights (ZeRO-3: this rank's slices)."""
    grads: int = 0
    """Gradients: on the weights, the 16-bit partitions and the fp32 gradients of the masters."""
    optimizer: int = 0
    """fp32 master weights (where separate from the module's) and the optimizer's moments."""
    buffers: int = 0
    """ZeRO's gradient buckets."""
    other: int = 0
    """Anything else the optimizer wrapper holds (bookkeeping tensors)."""


_MASTERS = (
    "single_partition_of_fp32_groups",
    "fp32_partitioned_groups_flat",
    "fp32_groups_flat_partition",
    "fp32_groups",
)


def state_breakdown(engine) -> StateBreakdown:
    """What the engine holds right now, walked from its module and optimizer wrapper. Call it at the optimizer
    step (``at_optimizer_step``) to see the gradients; between steps DeepSpeed has freed them."""
    seen: set[tuple[int, int]] = set()
    out = StateBreakdown()

    def add(t, kind: str) -> None:
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            return
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            setattr(out, kind, getattr(out, kind) + t.untyped_storage().nbytes())
        if t.grad is not None:
            add(t.grad, "grads")

    def walk(obj, kind: str, depth: int = 0) -> None:
        if isinstance(obj, torch.Tensor):
            add(obj, kind)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, kind, depth)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item, kind, depth)
        elif depth < 1 and type(obj).__module__.startswith("deepspeed") and hasattr(obj, "__dict__"):
            for item in vars(obj).values():  # e.g. ZeRO-3's gradient bucket objects
                walk(item, kind, depth + 1)

    for p in engine.module.parameters():
        add(p.ds_tensor if is_partitioned(p) else p, "params")
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # DeepSpeed wraps the torch optimizer
    for name in _MASTERS:
        walk(getattr(opt, name, None), "optimizer")
    walk(list(inner.state.values()), "optimizer")
    for group in inner.param_groups:  # ZeRO-3 empties these between steps; the masters above stay
        walk(group["params"], "optimizer")
    if opt is not inner:
        for name, value in vars(opt).items():
            kind = (
                "buffers"
                if "ipg" in name
                else "other"
                if "norm" in name
                else "grads"
                if "grad" in name
                else "other"
            )
            walk(value, kind)
    return out


@contextlib.contextmanager
def at_optimizer_step(engine) -> Iterator[list[StateBreakdown]]:
    """Within the block, each optimizer step appends the engine's :func:`state_breakdown` taken as the torch
    optimizer returns from updating the weights: the moments exist (from the first step on), the gradients
    and fp32 masters too (DeepSpeed frees the gradients after this): where model states peak."""
    taken: list[StateBreakdown] = []
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)
    step = inner.step

    def measured_step(*args, **kwargs):
        out = step(*args, **kwargs)
        taken.append(state_breakdown(engine))  # the moments exist now, the fp32 gradients are not yet freed
        return out

    own = "step" in vars(inner)  # an instance attribute to restore, or the class's method
    inner.step = measured_step
    try:
        yield taken
    finally:
        if own:
            inner.step = step
        else:
            del inner.step


def state_bytes(engine) -> int:
    """Bytes this rank holds for model parameters + optimizer (fp32 masters and Adam moments): the per-rank
    memory ZeRO shards."""
    held = state_breakdown(engine)
    return held.params + held.optimizer
