"""`asva plan`: what an AVSyncD training run takes on a given cluster, before anything is rented.

Everything comes from the experiment config and the cluster description: memory per GPU split into parameters,
gradients, optimizer states, ZeRO buffers and activations (``planning.memory``, exact for the model states);
whether it fits and the largest micro-batch that does; checkpoint bytes and the time to write them; the
latent cache's size and build time; step time from the model's FLOPs at a stated MFU; wall-clock and GPU-hours
for ``train.max_steps`` at the config's global batch. Stated assumptions (MFU, bandwidths, the per-GPU reserve
for the CUDA context and allocator slack, the mean clip length) are inputs with defaults, printed with the plan.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from asva_model.build import build_audio_encoder
from asva_model.config import ModelConfig
from asva_model.data.config import SamplingConfig
from asva_platform.planning import flops as flops_mod
from asva_platform.planning import memory

GB = 1e9
GIB = 2**30
AVSYNC15_CLIPS = {"train": 1350, "test": 150}
"""AVSync15's split sizes (shared/reference/asva.md)."""
MAX_MICRO_BATCH = 256


@dataclass(frozen=True)
class ClusterSpec:
    """The cluster a plan is for, and the rates it assumes."""

    nodes: int = 1
    gpus_per_node: int = 8
    gpu_memory_gb: float = 80.0
    """Usable memory per GPU, GB (1e9 bytes, as vendors state it)."""
    gpu_tflops: float = 0.0
    """Dense 16-bit peak TFLOP/s per GPU; 0 = look ``gpu_name`` up (``planning.flops`` table)."""
    gpu_name: str = "A100"
    mfu: float = 0.35
    """Model FLOPs utilisation assumed for step time (gpu_check measures it on a real GPU)."""
    network_gbps: float = 25.0
    """Collective bandwidth per GPU, GB/s (the ring's slowest link: PCIe or NVLink in a node, the NIC across)."""
    storage_gbps: float = 1.0
    """Write/read bandwidth to object storage per node, GB/s."""
    reserve_gb: float = 1.5
    """Per GPU, outside the model: CUDA context, kernels, allocator fragmentation."""
    mean_clip_s: float = 6.0
    """Mean AVSync15 clip length in seconds (clips are 2-10 s trims), for the every-window cache."""
    decode_windows_per_s: float = 20.0
    """Per node: windows decoded (video frames + audio) per second while building the cache."""

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def peak_flops(self) -> float:
        return flops_mod.peak_flops(self.gpu_name, "bf16", self.gpu_tflops)


@dataclass(frozen=True)
class TrainingShape:
    """What the plan needs of the ``train`` section (and ``model.gradient_checkpointing``)."""

    precision: str = "bf16"
    micro_batch: int = 4
    """The configured micro-batch per GPU; the plan lowers it to fit or to the global batch."""
    global_batch: int = 64
    steps: int = 37000
    checkpoint_every: int = 1000
    grad_ckpt: bool = True
    zero: memory.ZeroSettings = memory.ZeroSettings()
    """The ``train`` keys that size ZeRO's buffers."""


@dataclass(frozen=True)
class CacheShape:
    """What the plan needs of the ``preprocess`` section."""

    windows_per_clip: int = 0
    """0: every window at a stride of 1/fps (then ``ClusterSpec.mean_clip_s`` sets the count)."""
    flips: bool = True


@dataclass(frozen=True)
class StagePlan:
    """One ZeRO stage on the cluster."""

    zero_stage: int
    states: memory.ModelStates
    activations_per_sample: int
    activations_fixed: int
    """Saved tensors that do not grow with the micro-batch (shared across its clips)."""
    micro_batch: int
    """What the plan runs: the config's micro-batch, lowered to fit and to the global batch."""
    accumulation: int
    largest_micro_batch: int
    """The largest micro-batch that fits (0: not even one clip)."""
    reserve: int
    gpu_memory: int
    step_seconds: float
    """Compute at the stated MFU plus communication at the stated bandwidth, not overlapped (a bound)."""
    comm_seconds: float
    checkpoint_bytes: int
    checkpoint_bytes_per_rank: int
    checkpoint_write_s: float
    train_hours: float
    gpu_hours: float

    @property
    def activations(self) -> int:
        return self.activations_fixed + self.activations_per_sample * self.micro_batch

    @property
    def total(self) -> int:
        return self.states.total + self.activations + self.reserve

    @property
    def fits(self) -> bool:
        return self.largest_micro_batch >= 1 and self.total <= self.gpu_memory


@dataclass(frozen=True)
class CachePlan:
    windows: int
    bytes_per_window: int
    total_bytes: int
    encode_s: float
    decode_s: float
    upload_s: float

    @property
    def build_s(self) -> float:
        """Decode, encode and upload overlap in the pipeline: the slowest of them sets the pace."""
        return max(self.encode_s, self.decode_s, self.upload_s)


@dataclass(frozen=True)
class Plan:
    cluster: ClusterSpec
    precision: str
    grad_ckpt: bool
    params: int
    trainable: int
    global_batch: int
    steps: int
    flops_per_sample: float
    """Hardware FLOPs per clip: forward + backward, plus the recomputed forward under gradient checkpointing."""
    stages: list[StagePlan]
    cache: CachePlan
    assumptions: dict[str, float | str] = field(default_factory=dict)

    def best(self) -> StagePlan | None:
        """The fitting stage with the shortest run; the lower ZeRO stage on ties (less to reassemble)."""
        fitting = [s for s in self.stages if s.fits]
        return min(fitting, key=lambda s: (round(s.train_hours, 1), s.zero_stage)) if fitting else None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for s, d in zip(self.stages, out["stages"]):
            d.update(activations=s.activations, total=s.total, fits=s.fits)
        out["cache"]["build_s"] = self.cache.build_s
        best = self.best()
        out["best_zero_stage"] = best.zero_stage if best else None
        return out


def checkpoint_bytes(inv: memory.ParamInventory, zero_stage: int, precision: str, world: int) -> int:
    """Bytes of one DeepSpeed checkpoint of the engine, all ranks (tensor payload; pickling adds a few KB).

    ZeRO-0: rank 0 writes the module (b·P) and the optimizer (fp32 masters when mixed, and both moments).
    ZeRO-1/2: rank 0 writes the module; each rank its optimizer partition (12·S). ZeRO-3: each rank writes its
    slice of the frozen tensors (b·Σ_f⌈n/N⌉) and its optimizer partition (12·Σₜ⌈n/N⌉); the trainable 16-bit
    weights are rebuilt from the fp32 masters."""
    b = memory.BYTES_PER_VALUE[precision]
    P, T = inv.total, inv.trained
    if zero_stage == 0:
        return b * P + (12 if b == 2 else 8) * T
    if zero_stage in (1, 2):
        return b * P + 12 * memory.zero_partition(T, world) * world
    slices = [(-(-n // world), t) for n, t in zip(inv.sizes, inv.trainable)]
    frozen = sum(s for s, t in slices if not t)
    trained = sum(s for s, t in slices if t)
    return (b * frozen + 12 * trained) * world


def checkpoint_bytes_per_rank(inv: memory.ParamInventory, zero_stage: int, precision: str, world: int) -> int:
    """The most one rank writes (rank 0 with the module for ZeRO-0..2)."""
    total = checkpoint_bytes(inv, zero_stage, precision, world)
    if zero_stage == 0:
        return total
    b = memory.BYTES_PER_VALUE[precision]
    if zero_stage in (1, 2):
        return b * inv.total + 12 * memory.zero_partition(inv.trained, world)
    return total // world


def comm_bytes_per_step(
    inv: memory.ParamInventory, zero_stage: int, precision: str, accumulation: int
) -> float:
    """Bytes each GPU sends per optimizer step (a ring collective of B bytes sends about B per GPU, an
    all-reduce 2B). ZeRO-0/1 all-reduce the trainable gradients once per step; ZeRO-2 reduce-scatters them at
    every micro-step and all-gathers the updated weights once; ZeRO-3 also all-gathers every weight, frozen ones
    included, for the forward and again for the backward of every micro-step."""
    b = memory.BYTES_PER_VALUE[precision]
    T, P = inv.trained * b, inv.total * b
    if zero_stage in (0, 1):
        return 2.0 * T
    if zero_stage == 2:
        return accumulation * T + T
    return accumulation * (2 * P + T)


def _cache_plan(
    m: ModelConfig, s: SamplingConfig, p: CacheShape, cluster: ClusterSpec, audio_tokens: int
) -> CachePlan:
    factor = m.vae.downsample_factor
    latent = m.unet.in_channels * s.num_frames * (s.image_size[0] // factor) * (s.image_size[1] // factor)
    per_window = 2 * (2 * latent * (2 if p.flips else 1) + audio_tokens * m.audio_encoder.embed_dim)
    stride = 1.0 / s.fps
    every = max(1, math.floor((cluster.mean_clip_s - s.clip_duration) / stride) + 1)
    windows_train = AVSYNC15_CLIPS["train"] * (p.windows_per_clip or every)
    windows = windows_train + AVSYNC15_CLIPS["test"] * s.test_clips_per_video
    encode_flops = flops_mod.online_encoder_flops_per_sample(m, s) * windows * (2 if p.flips else 1)
    total = per_window * windows
    return CachePlan(
        windows=windows,
        bytes_per_window=per_window,
        total_bytes=total,
        encode_s=encode_flops / (cluster.world * cluster.peak_flops * cluster.mfu),
        decode_s=windows / (cluster.nodes * cluster.decode_windows_per_s),
        upload_s=total / (cluster.nodes * cluster.storage_gbps * GB),
    )


def plan(
    m: ModelConfig,
    s: SamplingConfig,
    t: TrainingShape,
    cache: CacheShape,
    cluster: ClusterSpec,
    zero_stages: tuple[int, ...] = (0, 1, 2, 3),
) -> Plan:
    """The plan for the model ``m`` at the clip geometry ``s``, trained as ``t``, on ``cluster``, for each of
    ``zero_stages``."""
    precision, grad_ckpt = t.precision, t.grad_ckpt
    if cluster.peak_flops <= 0:
        raise ValueError(f"no peak TFLOP/s known for GPU {cluster.gpu_name!r}: pass --gpu-tflops")
    world = cluster.world
    inv = memory.unet_inventory(m)
    audio_tokens = build_audio_encoder(memory.geometry_only(memory.config_key(m)), device="meta").num_tokens
    one, two = (memory.activations(m, s, b, audio_tokens).bytes(grad_ckpt, precision) for b in (1, 2))
    acts, acts_fixed = two - one, 2 * one - two  # per clip, and what does not grow with the batch
    est = flops_mod.training_flops_per_sample(m, s)
    flops = est.per_sample + (est.forward if grad_ckpt else 0.0)
    global_batch = t.global_batch
    per_gpu_batch = max(1, global_batch // world)
    gpu_memory = int(cluster.gpu_memory_gb * GB)
    reserve = int(cluster.reserve_gb * GB)
    compute_s = global_batch * flops / (world * cluster.peak_flops * cluster.mfu)
    stages = []
    for stage in zero_stages:
        states = memory.model_states(inv, stage, precision, world, overlap_comm=True, zero=t.zero)
        room = gpu_memory - reserve - states.total - acts_fixed
        largest = min(MAX_MICRO_BATCH, max(0, room // acts)) if acts else MAX_MICRO_BATCH
        micro = max(1, min(t.micro_batch, per_gpu_batch, largest or 1))
        accumulation = max(1, math.ceil(global_batch / (micro * world)))
        comm_s = (
            comm_bytes_per_step(inv, stage, precision, accumulation) / (cluster.network_gbps * GB)
            if world > 1
            else 0.0
        )
        step_s = compute_s + comm_s
        ckpt = checkpoint_bytes(inv, stage, precision, world)
        ckpt_rank = checkpoint_bytes_per_rank(inv, stage, precision, world)
        # each node uploads its ranks' shards; the node holding rank 0's module file is the slowest
        per_node = max(
            ckpt_rank + (ckpt - ckpt_rank) / world * (cluster.gpus_per_node - 1), ckpt / cluster.nodes
        )
        write_s = per_node / (cluster.storage_gbps * GB)
        saves = t.steps // t.checkpoint_every
        hours = (t.steps * step_s + saves * write_s) / 3600
        stages.append(
            StagePlan(
                zero_stage=stage,
                states=states,
                activations_per_sample=acts,
                activations_fixed=acts_fixed,
                micro_batch=micro,
                accumulation=accumulation,
                largest_micro_batch=int(largest),
                reserve=reserve,
                gpu_memory=gpu_memory,
                step_seconds=step_s,
                comm_seconds=comm_s,
                checkpoint_bytes=ckpt,
                checkpoint_bytes_per_rank=ckpt_rank,
                checkpoint_write_s=write_s,
                train_hours=hours,
                gpu_hours=hours * world,
            )
        )
    return Plan(
        cluster=cluster,
        precision=precision,
        grad_ckpt=grad_ckpt,
        params=inv.total,
        trainable=inv.trained,
        global_batch=global_batch,
        steps=t.steps,
        flops_per_sample=flops,
        stages=stages,
        cache=_cache_plan(m, s, cache, cluster, audio_tokens),
        assumptions={
            "gpu": cluster.gpu_name,
            "peak_tflops": cluster.peak_flops / 1e12,
            "mfu": cluster.mfu,
            "network_gbps": cluster.network_gbps,
            "storage_gbps": cluster.storage_gbps,
            "reserve_gb": cluster.reserve_gb,
            "mean_clip_s": cluster.mean_clip_s,
            "decode_windows_per_s": cluster.decode_windows_per_s,
        },
    )


def _gb(n: float) -> str:
    return f"{n / GB:7.2f}"


def render(p: Plan) -> str:
    """The plan as a table a person reads before renting the cluster."""
    c = p.cluster
    lines = [
        f"cluster: {c.nodes} node(s) x {c.gpus_per_node} GPU(s) = {c.world} GPUs of {c.gpu_memory_gb:g} GB, "
        f"{p.assumptions['peak_tflops']:g} TFLOP/s peak at MFU {c.mfu:g}",
        f"model: {p.params / 1e6:,.0f}M UNet parameters, {p.trainable / 1e6:,.0f}M trainable; "
        f"{p.precision}, gradient checkpointing {'on' if p.grad_ckpt else 'off'}; "
        f"{p.flops_per_sample / 1e12:.2f} TFLOP per clip",
        f"schedule: {p.steps:,} steps at global batch {p.global_batch}",
        "",
        "per GPU, GB          " + "".join(f"  ZeRO-{s.zero_stage}" for s in p.stages),
    ]
    rows = [
        ("parameters", lambda s: s.states.params),
        ("gradients", lambda s: s.states.grads),
        ("optimizer states", lambda s: s.states.optimizer),
        ("ZeRO buffers", lambda s: s.states.buffers),
        ("activations", lambda s: s.activations),
        ("reserve", lambda s: s.reserve),
        ("total", lambda s: s.total),
    ]
    for name, get in rows:
        lines.append(f"{name:<21}" + "".join(f" {_gb(get(s))}" for s in p.stages))
    lines.append(f"{'fits':<21}" + "".join(f" {'yes' if s.fits else 'NO':>7}" for s in p.stages))
    lines.append(
        f"{'micro-batch x accum':<21}"
        + "".join(f" {f'{s.micro_batch}x{s.accumulation}':>7}" for s in p.stages)
    )
    lines.append(f"{'largest micro-batch':<21}" + "".join(f" {s.largest_micro_batch:>7}" for s in p.stages))
    lines.append(f"{'checkpoint, GB':<21}" + "".join(f" {_gb(s.checkpoint_bytes)}" for s in p.stages))
    lines.append(f"{'checkpoint write, s':<21}" + "".join(f" {s.checkpoint_write_s:7.1f}" for s in p.stages))
    lines.append(f"{'step, s':<21}" + "".join(f" {s.step_seconds:7.2f}" for s in p.stages))
    lines.append(f"{'  of it comms, s':<21}" + "".join(f" {s.comm_seconds:7.2f}" for s in p.stages))
    lines.append(f"{'wall-clock, h':<21}" + "".join(f" {s.train_hours:7.1f}" for s in p.stages))
    lines.append(f"{'GPU-hours':<21}" + "".join(f" {s.gpu_hours:7.0f}" for s in p.stages))
    k = p.cache
    lines += [
        "",
        f"latent cache: {k.windows:,} windows x {k.bytes_per_window / 1e6:.2f} MB = {k.total_bytes / GB:.1f} GB; "
        f"build ~{k.build_s / 60:.1f} min (encode {k.encode_s / 60:.1f}, decode {k.decode_s / 60:.1f}, "
        f"upload {k.upload_s / 60:.1f})",
    ]
    best = p.best()
    lines.append(
        f"choose: ZeRO-{best.zero_stage}, micro-batch {best.micro_batch} x {best.accumulation} accumulation"
        if best
        else "nothing fits: more GPUs, more memory per GPU, gradient checkpointing, or a higher ZeRO stage"
    )
    lines.append(
        "assumed: " + ", ".join(f"{k}={v}" for k, v in p.assumptions.items()) + " (flags change them)"
    )
    return "\n".join(lines)
