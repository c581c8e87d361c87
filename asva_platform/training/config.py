"""`train` config section: Ray Train + DeepSpeed ZeRO training of AVSyncD."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asva_model.errors import require


@dataclass
class TrainConfig:
    num_workers: int = 8
    """Ray Train workers (one per GPU)."""
    use_gpu: bool = True
    """Give each worker a GPU (NCCL); False trains on CPU with gloo."""
    min_workers: int = 0
    """Elastic training: the fewest workers the run goes on with (0 = a fixed `num_workers`). Below
    `num_workers`, Ray Train scales between the two (`ScalingConfig(num_workers=(min, max))`): after a node is
    lost the run restarts from its latest checkpoint on the workers that fit, and it grows back when room
    returns. Gradient accumulation is set per worker count so that the global batch stays
    batch_size_per_worker x gradient_accumulation_steps x num_workers (every count must divide it)."""
    elastic_resize_check_s: float = 60.0
    """Elastic only: how often Ray Train looks for room to grow the worker group (seconds)."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (ScalingConfig.resources_per_worker); online data mode decodes on them."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    """How Ray places the workers (ScalingConfig.placement_strategy): `PACK` fills nodes one by one, `SPREAD`
    spreads them over nodes where it can, `STRICT_SPREAD` puts every worker on a different node."""
    batch_size_per_worker: int = 4
    """Micro-batch per worker (the paper: 4)."""
    gradient_accumulation_steps: int = 2
    """Micro-batches per optimizer step (the paper: 2; global batch 4 x 8 x 2 = 64)."""
    max_steps: int = 37000
    """Optimizer steps (the released AVSync15 checkpoint is step 37,000)."""
    lr: float = 1e-4
    """AdamW learning rate, constant schedule (the paper: 1e-4)."""
    lr_warmup_steps: int = 0
    """Linear warm-up steps before the constant learning rate (the paper: 0)."""
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
    reduce_bucket_size: int = 500_000_000
    """ZeRO-2/3: elements per gradient reduction bucket (DeepSpeed's default; 1 GB in 16 bits, allocated per rank,
    two under ZeRO-2 on GPUs). Lower it on small GPUs; `asva plan` counts it."""
    zero3_max_live_parameters: int = 1_000_000_000
    """ZeRO-3: parameters a rank may hold gathered at once (DeepSpeed's default, ~all of AVSyncD's 1.17 B). With
    `zero3_max_reuse_distance`, what ZeRO-3 saves in memory during the forward and backward passes."""
    zero3_max_reuse_distance: int = 1_000_000_000
    """ZeRO-3: a gathered parameter used again within this many parameters is kept, not re-gathered (DeepSpeed's
    default keeps them from the forward to the backward pass); 0 releases each layer after use."""
    precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    """Mixed precision (the paper: fp16 with loss scaling; bf16 preferred on Ampere+). fp16 needs GPUs."""
    fp16_initial_scale_power: int = 16
    """fp16 only: the dynamic loss scale starts at 2**this and halves on overflow."""
    data_mode: Literal["cached", "online"] = "cached"
    """`cached`: stream VAE latents + audio tokens from the latent cache (fast). `online`: decode clips and
    run the frozen VAE and audio encoder in the loop, as the original code does (no cache needed)."""
    cache: str = ""
    """The latent cache to train from (cached mode): a cache_id under `storage.root`/caches, or a full URI."""
    cache_in_memory: bool = True
    """Cached mode: read the cache's train split once into the Ray object store (AVSync15's cache is ~1-2 GB)
    instead of re-reading it from storage every epoch (a per-epoch start-up cost that dominates small epochs)."""
    prefetch_batches: int = 4
    """Batches prepared ahead of the training step (Ray Data `iter_torch_batches`, or the online decoder)."""
    local_shuffle_buffer: int = 0
    """Cached mode: windows in each worker's local shuffle buffer (0 = block-order shuffle only; a buffer
    mixes windows of different clips within a batch but costs throughput)."""
    ema: bool = False
    """Keep an exponential moving average of the trainable weights (saved with checkpoints, exported)."""
    ema_decay: float = 0.9999
    """EMA decay per update."""
    ema_update_every: int = 1
    """Update the EMA every N optimizer steps (under ZeRO-3 each update gathers the trainable weights)."""
    log_every: int = 10
    """Report metrics (Ray Train report + MLflow) every N optimizer steps; also the throughput window."""
    checkpoint_every: int = 1000
    """Save a checkpoint every N optimizer steps (and always at the last step)."""
    keep_checkpoints: int = 2
    """Keep the last K checkpoints (plus milestones)."""
    milestone_every: int = 0
    """Also keep every checkpoint whose step is a multiple of this, under <run>/milestones (0 = none)."""
    checkpoint_upload: Literal["async", "sync"] = "async"
    """`async`: training goes on while each rank uploads its shards (Ray Train's ASYNC upload mode; the stall
    is the local save alone, and a checkpoint is recorded only once every rank's upload finished); `sync`:
    training waits for the upload. The stall per checkpoint is logged as `checkpoint_stall_s`."""
    max_failures: int = 3
    """Worker-failure restarts from the latest checkpoint (FailureConfig)."""
    validate_every: int = 1000
    """Validation (held-out loss + sample videos) every N optimizer steps and at the end (0 = never)."""
    val_windows: int = 32
    """Held-out cached windows (the cache's `test` split) for the validation loss; fixed noise per window."""
    num_samples: int = 2
    """Videos generated at each validation and logged to MLflow as mp4 (with audio); 0 = none."""
    export: bool = True
    """After training, consolidate the final checkpoint into a diffusers `save_pretrained` UNet folder
    under <run>/export (plus <run>/export_ema with EMA weights)."""
    peak_tflops: float = 0.0
    """Peak dense TFLOP/s of one accelerator at the training precision, for MFU; 0 = look up the GPU by
    name (MFU is logged on GPUs only)."""
    seed: int = 123
    """Global seed (the paper: 123)."""

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        require(
            0 <= self.min_workers <= self.num_workers,
            "min_workers",
            f"must be between 0 (fixed size) and num_workers ({self.num_workers}), got {self.min_workers}",
        )
        require(self.elastic_resize_check_s > 0, "elastic_resize_check_s", "must be > 0")
        require(
            self.placement_strategy in ("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"),
            "placement_strategy",
            f"must be PACK, SPREAD, STRICT_SPREAD or STRICT_PACK, got {self.placement_strategy!r}",
        )
        require(self.batch_size_per_worker >= 1, "batch_size_per_worker", "must be >= 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        require(self.max_steps >= 1, "max_steps", "must be >= 1")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.lr_warmup_steps >= 0, "lr_warmup_steps", "must be >= 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            f"must be two numbers in [0, 1), got {self.adam_betas}",
        )
        require(self.zero_stage in (0, 1, 2, 3), "zero_stage", f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        for key in ("reduce_bucket_size", "zero3_max_live_parameters"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.zero3_max_reuse_distance >= 0, "zero3_max_reuse_distance", "must be >= 0")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(
            not (self.precision == "fp16" and not self.use_gpu),
            "precision",
            "fp16 (loss scaling) needs GPUs; use bf16 or fp32 with use_gpu: false",
        )
        require(self.prefetch_batches >= 0, "prefetch_batches", "must be >= 0")
        require(self.local_shuffle_buffer >= 0, "local_shuffle_buffer", "must be >= 0")
        require(0.0 < self.ema_decay < 1.0, "ema_decay", f"must be in (0, 1), got {self.ema_decay}")
        require(self.ema_update_every >= 1, "ema_update_every", "must be >= 1")
        require(self.log_every >= 1, "log_every", "must be >= 1")
        require(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        require(self.milestone_every >= 0, "milestone_every", "must be >= 0")
        require(
            self.checkpoint_upload in ("async", "sync"),
            "checkpoint_upload",
            f"must be async or sync, got {self.checkpoint_upload!r}",
        )
        require(self.max_failures >= -1, "max_failures", "must be >= 0 (or -1 = unlimited)")
        require(self.validate_every >= 0, "validate_every", "must be >= 0")
        require(self.val_windows >= 0, "val_windows", "must be >= 0")
        require(self.num_samples >= 0, "num_samples", "must be >= 0")
        require(self.peak_tflops >= 0, "peak_tflops", "must be >= 0")
        if self.elastic:
            lost = [w for w in range(self.min_workers, self.num_workers) if self.accumulation_for(w) is None]
            require(
                not lost,
                "min_workers",
                f"the global batch of {self.global_batch_size} clips (at "
                f"{self.num_workers} workers) is no whole number of accumulation steps of "
                f"batch_size_per_worker {self.batch_size_per_worker} on {lost} workers",
            )

    @property
    def global_batch_size(self) -> int:
        """Clips per optimizer step across all workers."""
        return self.batch_size_per_worker * self.gradient_accumulation_steps * self.num_workers

    @property
    def elastic(self) -> bool:
        """Whether Ray Train may run this on fewer than ``num_workers`` workers (``min_workers`` below it)."""
        return 0 < self.min_workers < self.num_workers

    def accumulation_for(self, world: int, global_batch: int = 0) -> int | None:
        """Gradient accumulation steps that make ``global_batch`` (default: this config's) on ``world``
        workers, or None when no whole number does."""
        clips = global_batch or self.global_batch_size
        per_step = self.batch_size_per_worker * world
        return clips // per_step if clips % per_step == 0 else None
