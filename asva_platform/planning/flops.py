"""Training FLOPs per clip from the model config, and model FLOPs utilisation (MFU).

Formula (documented in docs/training.md):

* F_fwd: the UNet forward FLOPs for one clip, counted exactly (every matmul and convolution, including
  attention score/value products) by running the model on the ``meta`` device under
  ``torch.utils.flop_counter.FlopCounterMode`` at the configured geometry: ``num_frames`` latents of
  (H/8, W/8), 77 text tokens and the audio encoder's token count.
* F_bwd: per operation, the backward costs one forward-equivalent for the input gradient, plus one more
  for the weight gradient only when the weight trains. Weight-free products (attention QK^T and AV)
  cost two (both inputs need gradients). Frozen SD-1.5 layers therefore cost 2x forward in total, the
  trainable `_temp`/`_audio` layers 3x.
* Training FLOPs per clip = F_fwd + F_bwd. Gradient-checkpoint recomputation is NOT counted (MFU, not
  hardware FLOPs utilisation), nor are the frozen VAE/audio encoder of the online mode.
* The online mode adds, per clip, the frozen VAE encoder's forward over the clip's frames and the frozen
  audio encoder's forward over its mel (``online_encoder_flops_per_sample``; the null audio, encoded once
  per batch, is left out). (F_fwd + F_bwd + encoders) / (F_fwd + F_bwd) is the compute-only online/cached
  cost ratio: what caching saves when decoding keeps up.
* Sampling one clip (evaluation, generation) costs, per sampler step, one UNet forward per guidance branch
  (two with audio CFG, one at scale 1), plus the VAE encode of the first frame, the audio encoder's forward and
  the VAE decode of every frame (``sampling_flops_per_clip``); the metric networks are not counted.
* MFU = FLOPs per clip x clips/s per accelerator / peak dense FLOP/s of one accelerator at the training
  precision.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import asdict, dataclass

import torch

from asva_model.build import build_audio_encoder, build_unet, build_vae
from asva_model.config import ModelConfig
from asva_model.data.config import SamplingConfig
from asva_platform.config import from_dict

# Dense (no sparsity) bf16/fp16 tensor-core peak TFLOP/s by device-name fragment, most specific first.
PEAK_TFLOPS_16BIT = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("V100", 125.0),
)


@dataclass(frozen=True)
class FlopsEstimate:
    forward: float
    """Forward FLOPs per clip."""
    backward: float
    """Backward FLOPs per clip (input gradients everywhere, weight gradients for trainable layers)."""
    trainable_forward_fraction: float
    """Share of forward FLOPs in layers whose weights train."""

    @property
    def per_sample(self) -> float:
        """Training FLOPs per clip (forward + backward)."""
        return self.forward + self.backward


def _leaf_flops(counts: dict[str, dict]) -> dict[str, float]:
    """Per-module FLOPs counted in that module itself, excluding its submodules."""
    totals = {name: float(sum(ops.values())) for name, ops in counts.items() if name != "Global"}
    own = dict(totals)
    for name, total in totals.items():
        parent = name
        while "." in parent:  # nearest recorded ancestor (modules without own ops are not recorded)
            parent = parent.rsplit(".", 1)[0]
            if parent in own:
                own[parent] -= total
                break
    return own


def _module_for(model: torch.nn.Module, fqn: str) -> torch.nn.Module | None:
    parts = fqn.split(".")[1:]  # first part is the root class name
    mod = model
    for part in parts:
        mod = getattr(mod, part, None)
        if mod is None:
            return None
    return mod


def estimate_unet_flops(
    model: torch.nn.Module, num_frames: int, latent_hw: tuple[int, int], text_tokens: int, audio_tokens: int
) -> FlopsEstimate:
    """Count ``model``'s forward on meta tensors and derive the backward by the rule above."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.config
    dev = torch.device("meta")
    sample = torch.zeros(1, cfg.in_channels, num_frames, *latent_hw, device=dev)
    text = torch.zeros(1, text_tokens, cfg.cross_attention_dim, device=dev)
    audio = torch.zeros(1, audio_tokens, cfg.audio_cross_attention_dim, device=dev)
    mask = torch.ones(1, num_frames, audio_tokens, dtype=torch.bool, device=dev)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(sample, torch.zeros(1, device=dev), text, audio, mask)
    forward = float(counter.get_total_flops())
    backward = trainable = 0.0
    for name, flops in _leaf_flops(counter.get_flop_counts()).items():
        if flops <= 0:
            continue
        module = _module_for(model, name)
        own_params = list(module.parameters(recurse=False)) if module is not None else []
        if not own_params:  # weight-free products (attention): gradients for both inputs
            backward += 2 * flops
        elif any(p.requires_grad for p in own_params):
            backward += 2 * flops
            trainable += flops
        else:
            backward += flops
    return FlopsEstimate(forward, backward, trainable / forward if forward else 0.0)


def config_key(model_cfg: ModelConfig) -> str:
    """A hashable form of ``model_cfg`` for the lru caches below (dataclasses with lists are not hashable)."""
    return json.dumps(asdict(model_cfg), sort_keys=True)


def geometry_only(model_cfg_json: str):
    """The ModelConfig of a cache key with every weight path cleared: meta-device builds read no file."""

    model_cfg = from_dict(ModelConfig, json.loads(model_cfg_json), "model")
    return dataclasses.replace(
        model_cfg, init_unet="", pretrained_sd="", audio_encoder_weights="", gradient_checkpointing=False
    )


@functools.lru_cache(maxsize=8)
def _estimate_cached(model_cfg_json: str, num_frames: int, latent_hw: tuple[int, int]) -> FlopsEstimate:

    meta_cfg = geometry_only(model_cfg_json)
    unet = build_unet(meta_cfg, device="meta")
    audio_tokens = build_audio_encoder(meta_cfg, device="meta").num_tokens
    return estimate_unet_flops(unet, num_frames, latent_hw, 77, audio_tokens)


def training_flops_per_sample(model_cfg: ModelConfig, sampling_cfg: SamplingConfig) -> FlopsEstimate:
    """FLOPs of one training clip for the configured model geometry and clip size (no weights loaded)."""
    geo = model_cfg
    factor = geo.vae.downsample_factor
    latent_hw = (sampling_cfg.image_size[0] // factor, sampling_cfg.image_size[1] // factor)
    return _estimate_cached(config_key(model_cfg), sampling_cfg.num_frames, latent_hw)


def peak_flops(device_name: str, precision: str, override_tflops: float = 0.0) -> float:
    """Peak FLOP/s of one accelerator: the override, else the table for 16-bit precisions; 0 if unknown
    (fp32 has no table entry: set train.peak_tflops)."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if precision not in ("bf16", "fp16"):
        return 0.0
    for fragment, tflops in PEAK_TFLOPS_16BIT:
        if fragment in device_name:
            return tflops * 1e12
    return 0.0


def mfu(flops_per_sample: float, samples_per_s_per_device: float, peak: float) -> float:
    """Model FLOPs utilisation in [0, 1]; 0 when the peak is unknown."""
    return flops_per_sample * samples_per_s_per_device / peak if peak > 0 else 0.0


@functools.lru_cache(maxsize=8)
def _encoders_cached(model_cfg_json: str, num_frames: int, image_hw: tuple[int, int]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    meta_cfg = geometry_only(model_cfg_json)
    dev = torch.device("meta")
    vae = build_vae(meta_cfg, device=dev)
    audio = build_audio_encoder(meta_cfg, device=dev)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vae.encode(torch.zeros(num_frames, 3, *image_hw, device=dev))
        audio.encode(torch.zeros(1, 1, *audio.mel_shape, device=dev))
    return float(counter.get_total_flops())


def online_encoder_flops_per_sample(model_cfg: ModelConfig, sampling_cfg: SamplingConfig) -> float:
    """Forward FLOPs of the frozen VAE encoder (every frame of one clip) and audio encoder (its mel): what the
    online data mode computes per clip that the latent cache has precomputed."""
    return _encoders_cached(config_key(model_cfg), sampling_cfg.num_frames, tuple(sampling_cfg.image_size))


@functools.lru_cache(maxsize=8)
def _decode_cached(model_cfg_json: str, num_frames: int, image_hw: tuple[int, int]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    meta_cfg = geometry_only(model_cfg_json)
    dev = torch.device("meta")
    vae = build_vae(meta_cfg, device=dev)
    factor = meta_cfg.vae.downsample_factor
    latents = torch.zeros(
        num_frames, vae.config.latent_channels, *(n // factor for n in image_hw), device=dev
    )
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vae.decode(latents)
    return float(counter.get_total_flops())


def sampling_flops_per_clip(
    model_cfg: ModelConfig, sampling_cfg: SamplingConfig, steps: int, branches: int
) -> float:
    """Forward FLOPs of generating one clip: ``steps`` sampler steps of ``branches`` UNet passes each (2 with
    audio guidance, 1 without), the first frame's and the mel's encoding, and decoding every frame."""
    key, frames, image_hw = config_key(model_cfg), sampling_cfg.num_frames, tuple(sampling_cfg.image_size)
    unet = training_flops_per_sample(model_cfg, sampling_cfg).forward
    encode = _encoders_cached(key, 1, image_hw)
    return steps * branches * unet + encode + _decode_cached(key, frames, image_hw)
