"""DeepSpeed for AVSyncD: the engine config from the typed ``train`` section, and engine construction.

* Only trainable parameters go to the (torch) AdamW: no DeepSpeed fused-Adam JIT build, and frozen
  SD-1.5 weights carry no optimizer state. Frozen weights stay inside the engine's module, so ZeRO-3
  partitions them too (the VAE and audio encoder are never in the engine).
* bf16: DeepSpeed 0.19 casts parameters but not buffers, so ``data_types.buffer_dtype`` is set (the
  temporal position embeddings are buffers).
* fp16: dynamic loss scaling; fp32: plain.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from asva_platform.training.config import TrainConfig

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config for ``world_size`` data-parallel ranks."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.use_gpu and train.zero_stage > 0:
        zero.update(overlap_comm=True, contiguous_gradients=True)
    if train.zero_stage == 3:
        # Exported weights come from the checkpoint (zero_to_fp32), not a gathered 16-bit copy on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
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


def state_bytes(engine) -> int:
    """Bytes this rank holds for model parameters + optimizer (fp32 masters and Adam moments), counting
    each storage once: the per-rank memory ZeRO shards."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(t: torch.Tensor | None) -> None:
        nonlocal total
        if t is None or not isinstance(t, torch.Tensor) or t.numel() == 0:
            return
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen:
            return
        seen.add(key)
        total += t.untyped_storage().nbytes()

    def add_all(items) -> None:
        for item in items or []:
            add_all(item) if isinstance(item, (list, tuple)) else add(item)

    for p in engine.module.parameters():
        add(p.ds_tensor if is_partitioned(p) else p)
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # DeepSpeed wraps the torch optimizer
    for group in inner.param_groups:
        add_all(group["params"])
    for key, values in inner.state.items():  # ZeRO-3 empties param_groups between steps; the state stays
        add(key if isinstance(key, torch.Tensor) else None)
        add_all(list(values.values()))
    for name in (
        "single_partition_of_fp32_groups",
        "fp32_partitioned_groups_flat",
        "fp32_groups_flat_partition",
        "fp32_groups",
    ):  # fp32 master copies, by optimizer wrapper
        add_all(getattr(opt, name, None))
    return total
