"""Per-rank memory of AVSyncD training under DeepSpeed, from the model config alone (meta device, no weights).

Model states are counted as DeepSpeed 0.19 allocates them for our engine (``training/deepspeed_setup.py``: a
torch AdamW over the trainable parameters only; the frozen SD-1.5 weights stay in the engine's module, so
ZeRO-3 partitions them too). Bytes per rank at the optimizer step, where they peak (the fp32 gradients exist
only then), with P parameters of which T train, b bytes per 16-bit or fp32 value (``b = 2`` for bf16/fp16,
4 for fp32), and N data-parallel ranks:

=========  ==========================  ==============================  ===============================
ZeRO       parameters                  gradients                       optimizer (masters + AdamW m, v)
=========  ==========================  ==============================  ===============================
0, 16-bit  b·P                         b·T + 4·T (the fp32 copy)       4·T + 8·T
0, fp32    4·P                         4·T                             8·T (the weights are the masters)
1 and 2    b·P                         4·S                             12·S
3          b·Σ⌈nᵢ/N⌉                   (b + 4)·Σₜ⌈nᵢ/N⌉                12·Σₜ⌈nᵢ/N⌉
=========  ==========================  ==============================  ===============================

The optimizer column adds AdamW's step counter, 4 bytes per tensor it updates: per trainable tensor under
ZeRO-0, one flat master per rank under ZeRO-1/2, one per sub-group (10⁹ elements) under ZeRO-3.

Padding rules. ZeRO-1/2 flatten the trainable parameters into one group padded to a multiple of 2·N elements
(``nccl_start_alignment_factor`` 2 times the world size), so each rank's partition is S = ⌈T / 2N⌉·2
elements. ZeRO-3 partitions every tensor on its own: each rank holds ⌈nᵢ/N⌉ elements of a tensor of nᵢ
(the last rank's slice is padded), Σ over all tensors for the parameters and Σₜ over the trainable ones for
the fp32 masters, gradients and moments. These are exact: `tests/unit/test_plan_measured.py` compares them
with the bytes a real engine holds, to the byte.

Working buffers (``ModelStates.buffers``): ZeRO-2 (``contiguous_gradients``) reduces gradients through a
bucket of ``reduce_bucket_size`` elements (two with ``overlap_comm``, our GPU setting); ZeRO-3 keeps one such
bucket, keeps parameters of at most ``stage3_param_persistence_threshold`` elements whole on every rank, and
holds gathered parameters while it computes (``gathered_parameters``: with DeepSpeed's defaults up to 10⁹ of
them, nearly all of AVSyncD, from the forward until the backward pass; ``train.zero3_*`` lower that).

Activations are the tensors autograd saves for the backward pass, counted on the meta device with
``saved_tensors_hooks`` at the real geometry (parameters excluded). With gradient checkpointing the resnets
and transformers of every level (``checkpoint_units``) keep only their inputs; the largest of them is
recomputed during the backward pass and adds its saved tensors once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from asva_model.build import build_unet
from asva_model.config import ModelConfig
from asva_model.data.config import SamplingConfig
from asva_model.models.blocks import checkpoint_units
from asva_platform.planning.flops import config_key, geometry_only

BYTES_PER_VALUE = {"bf16": 2, "fp16": 2, "fp32": 4}
STEP_COUNTER_BYTES = 4
TEXT_TOKENS = 77


@dataclass(frozen=True)
class ZeroSettings:
    """DeepSpeed ZeRO settings that size buffers: the ``train`` keys, and DeepSpeed 0.19's defaults for the rest."""

    reduce_bucket_size: int = 500_000_000
    """Elements in a gradient reduction bucket (``train.reduce_bucket_size``)."""
    max_live_parameters: int = 1_000_000_000
    """ZeRO-3: parameters held gathered at once (``train.zero3_max_live_parameters``)."""
    max_reuse_distance: int = 1_000_000_000
    """ZeRO-3: 0 releases each layer after use (``train.zero3_max_reuse_distance``)."""
    prefetch_bucket_size: int = 50_000_000
    """ZeRO-3: parameters gathered ahead of the layer that runs."""
    param_persistence_threshold: int = 100_000
    """ZeRO-3 keeps tensors of at most this many elements whole on every rank."""
    alignment_factor: int = 2
    """ZeRO-1/2 pad the flat trainable group to a multiple of this times the world size."""
    sub_group_size: int = 1_000_000_000
    """ZeRO-3 steps the optimizer over flat sub-groups of at most this many elements."""


@dataclass(frozen=True)
class ParamInventory:
    """The engine module's parameters: what the byte counts need, nothing else."""

    sizes: tuple[int, ...]
    """Elements of every parameter tensor, in module order (all of them are in the optimizer's one group)."""
    trainable: tuple[bool, ...]
    """Whether each of them trains."""
    largest_layer: int
    """Parameters of the largest single module (its own, not its children's): what ZeRO-3 gathers at once."""

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def trained(self) -> int:
        return sum(n for n, t in zip(self.sizes, self.trainable) if t)

    @classmethod
    def of(cls, module: torch.nn.Module) -> ParamInventory:
        params = list(module.parameters())
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules())
        return cls(tuple(p.numel() for p in params), tuple(p.requires_grad for p in params), largest)


@functools.lru_cache(maxsize=8)
def _unet_inventory(model_cfg_json: str) -> ParamInventory:
    return ParamInventory.of(build_unet(geometry_only(model_cfg_json), device="meta"))


def unet_inventory(model_cfg: ModelConfig) -> ParamInventory:
    """The UNet's parameters (sizes, trainable flags) for ``model_cfg``, built on the meta device."""
    return _unet_inventory(config_key(model_cfg))


@dataclass(frozen=True)
class ModelStates:
    """Bytes one rank holds for the model at the optimizer step."""

    params: int
    grads: int
    optimizer: int
    buckets: int
    """ZeRO's gradient reduction buckets."""
    gathered: int
    """ZeRO-3 parameters held whole while they run: the persistent small ones and the largest layer."""

    @property
    def buffers(self) -> int:
        return self.buckets + self.gathered

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.buffers


def zero_partition(trained: int, world: int, alignment: int = ZeroSettings.alignment_factor) -> int:
    """Elements of each rank's ZeRO-1/2 partition of ``trained`` flattened elements."""
    unit = alignment * world
    return -(-trained // unit) * unit // world


def model_states(
    inv: ParamInventory,
    zero_stage: int,
    precision: str,
    world: int,
    *,
    overlap_comm: bool = False,
    zero: ZeroSettings = ZeroSettings(),
) -> ModelStates:
    """Per-rank model-state bytes (module doc: the table and the padding rules)."""
    b = BYTES_PER_VALUE[precision]
    mixed = b == 2
    P, T = inv.total, inv.trained
    steps = STEP_COUNTER_BYTES  # AdamW's step count: a float32 scalar per tensor it updates
    if zero_stage == 0:
        tensors = sum(inv.trainable)
        optimizer = (12 if mixed else 8) * T + steps * tensors
        return ModelStates(b * P, b * T + (4 * T if mixed else 0), optimizer, 0, 0)
    if zero_stage in (1, 2):
        S = zero_partition(T, world, zero.alignment_factor)
        buckets = (2 if overlap_comm else 1) * zero.reduce_bucket_size * b if zero_stage == 2 else 0
        return ModelStates(b * P, 4 * S, 12 * S + steps, buckets, 0)  # one flat master per rank
    if zero_stage != 3:
        raise ValueError(f"zero_stage must be 0..3, got {zero_stage}")
    slices = [-(-n // world) for n in inv.sizes]
    trained_slices = sum(s for s, t in zip(slices, inv.trainable) if t)
    persistent = sum(n for n in inv.sizes if n <= zero.param_persistence_threshold)
    sub_groups = max(1, -(-trained_slices // zero.sub_group_size))
    return ModelStates(
        b * sum(slices),
        (b + 4) * trained_slices,
        12 * trained_slices + steps * sub_groups,
        zero.reduce_bucket_size * b,
        b * (persistent + gathered_parameters(inv, zero, persistent)),
    )


def gathered_parameters(inv: ParamInventory, zero: ZeroSettings, persistent: int) -> int:
    """ZeRO-3's gathered working set, in parameters (an upper bound). DeepSpeed keeps a gathered parameter while
    it will be used again within ``max_reuse_distance`` (by default until its backward pass), up to
    ``max_live_parameters``; with a reuse distance of 0 it releases each layer after use, holding the running
    layer and the prefetched ones. The largest layer is always whole while it runs."""
    partitioned = inv.total - persistent
    if zero.max_reuse_distance == 0:
        live = inv.largest_layer + zero.prefetch_bucket_size
    else:
        live = max(inv.largest_layer, zero.max_live_parameters)
    return min(partitioned, live)


# ---------------------------------------------------------------------------------------------
# Activations


@dataclass(frozen=True)
class ActivationCount:
    """Saved-for-backward bytes of one forward pass (fp32 on the meta device)."""

    total: int
    """Everything autograd saves, without gradient checkpointing."""
    outside_units: int
    """Saved outside the checkpointed units."""
    unit_inputs: int
    """The checkpointed units' input tensors (what checkpointing keeps instead)."""
    largest_unit: int
    """Saved inside the largest checkpointed unit (recomputed once during the backward pass)."""

    def bytes(self, grad_ckpt: bool, precision: str) -> int:
        """Activation bytes with or without checkpointing, at the training precision's value size."""
        fp32 = self.outside_units + self.unit_inputs + self.largest_unit if grad_ckpt else self.total
        return fp32 * BYTES_PER_VALUE[precision] // 4


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def count_activations(unet: torch.nn.Module, latent: tuple[int, ...], audio_tokens: int) -> ActivationCount:
    """Run ``unet`` once on meta tensors of ``latent`` = (batch, C, frames, h, w) and count what it saves."""
    dev = torch.device("meta")
    batch, frames = latent[0], latent[2]
    cfg = unet.config
    sample = torch.zeros(latent, device=dev, requires_grad=True)
    text = torch.zeros(batch, TEXT_TOKENS, cfg.cross_attention_dim, device=dev)
    audio = torch.zeros(batch, audio_tokens, cfg.audio_cross_attention_dim, device=dev)
    mask = torch.ones(batch, frames, audio_tokens, dtype=torch.bool, device=dev)
    params = {id(p) for p in unet.parameters()}
    seen: set[int] = set()
    keep: list[torch.Tensor] = []  # saved tensors stay referenced, so ids are not reused
    total = [0]

    def pack(t: torch.Tensor):
        base = t._base if t._base is not None else t
        if id(t) not in seen and id(base) not in params and id(t) not in params:
            seen.add(id(t))
            keep.append(t)
            total[0] += _nbytes(t)
        return t

    inside: list[int] = []
    inputs = [0]
    stack: list[int] = []

    def pre(_m, args):
        stack.append(total[0])
        inputs[0] += sum(_nbytes(a) for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())

    def post(_m, _args, _out):
        inside.append(total[0] - stack.pop())

    class FusedAttention(TorchFunctionMode):
        """SDPA as the fused kernels of CPU and GPU save it (q, k, v, out and the fp32 log-sum-exp), not as
        the meta device's math path (which would also save the L x L probabilities)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is not F.scaled_dot_product_attention:
                return func(*args, **kwargs)
            with torch.no_grad():
                out = func(*args, **kwargs)
            for t in (*args[:3], out):
                pack(t)
            total[0] += out[..., 0].numel() * 4
            return out.requires_grad_()

    handles = []
    for unit in checkpoint_units(unet):
        handles += [unit.register_forward_pre_hook(pre), unit.register_forward_hook(post)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), FusedAttention():
            unet(sample, torch.zeros(batch, device=dev), text, audio, mask)
    finally:
        for h in handles:
            h.remove()
    return ActivationCount(total[0], total[0] - sum(inside), inputs[0], max(inside, default=0))


@functools.lru_cache(maxsize=16)
def _activations_cached(model_cfg_json: str, latent: tuple[int, ...], audio_tokens: int) -> ActivationCount:
    unet = build_unet(geometry_only(model_cfg_json), device="meta").train()
    return count_activations(unet, latent, audio_tokens)


def activations(
    model_cfg: ModelConfig, sampling: SamplingConfig, micro_batch: int, audio_tokens: int
) -> ActivationCount:
    """Saved activations of one training micro-batch at the configured geometry."""
    factor = model_cfg.vae.downsample_factor
    h, w = (s // factor for s in sampling.image_size)
    latent = (micro_batch, model_cfg.unet.in_channels, sampling.num_frames, h, w)
    return _activations_cached(config_key(model_cfg), latent, audio_tokens)
