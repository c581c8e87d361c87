"""FLOPs per training clip from the model config (meta device) and the MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from asva_model.build import build_unet
from asva_model.config import ModelConfig
from asva_model.data.config import SamplingConfig
from asva_model.models.trainable import apply_trainable
from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.planning.flops import (
    estimate_unet_flops,
    mfu,
    online_encoder_flops_per_sample,
    peak_flops,
    training_flops_per_sample,
)


@pytest.fixture(scope="module")
def meta_unet():
    return build_unet(tiny_model_config(gradient_checkpointing=False), device="meta")


def count_forward(model, frames=4, hw=(4, 4), audio_tokens=229) -> float:
    dev = torch.device("meta")
    c = model.config
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(
            torch.zeros(1, 4, frames, *hw, device=dev),
            torch.zeros(1, device=dev),
            torch.zeros(1, 77, c.cross_attention_dim, device=dev),
            torch.zeros(1, audio_tokens, c.audio_cross_attention_dim, device=dev),
            torch.ones(1, frames, audio_tokens, dtype=torch.bool, device=dev),
        )
    return float(counter.get_total_flops())


def test_forward_is_the_exact_count_and_backward_follows_the_trainable_split(meta_unet):
    est = estimate_unet_flops(meta_unet, 4, (4, 4), 77, 229)
    assert est.forward == count_forward(meta_unet)
    # the paper's split: only _temp/_audio layers train -> between 1x (all frozen) and 2x (all trainable)
    assert est.forward < est.backward < 2 * est.forward
    assert 0 < est.trainable_forward_fraction < 1

    apply_trainable(meta_unet, [""])  # every parameter trains: backward = 2 x forward exactly
    try:
        assert estimate_unet_flops(meta_unet, 4, (4, 4), 77, 229).backward == pytest.approx(2 * est.forward)
    finally:
        apply_trainable(meta_unet, ["_temp", "_audio"])


def test_flops_scale_with_clip_size():
    small = training_flops_per_sample(tiny_model_config(), SamplingConfig(image_size=[16, 16]))
    large = training_flops_per_sample(tiny_model_config(), SamplingConfig(image_size=[32, 32]))
    # 4x the latent positions: convolutions and per-position layers scale 4x, spatial attention more
    assert 3.5 < large.per_sample / small.per_sample < 6


def test_peak_table_and_mfu():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp16") == 312e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 0  # no fp32 entry: MFU is not reported
    assert peak_flops("cpu", "fp32", override_tflops=2.0) == 2e12
    assert mfu(5e12, 10.0, 100e12) == pytest.approx(0.5)
    assert mfu(5e12, 10.0, 0.0) == 0.0


def test_online_encoder_flops_are_linear_in_frames_and_sized_like_the_paper():
    tiny = tiny_model_config()
    f4, f8, f12 = (
        online_encoder_flops_per_sample(
            tiny, SamplingConfig(image_size=[32, 32], num_frames=n, clip_duration=n / 6)
        )
        for n in (4, 8, 12)
    )
    assert f8 - f4 == pytest.approx(f12 - f8) and f4 > f8 - f4  # VAE per frame, plus one audio encode
    assert online_encoder_flops_per_sample(tiny, SamplingConfig(image_size=[64, 64])) > f12
    # full size: SD-1.5's VAE encoder on 12 frames of 256x256 (~3.27 TFLOP) + ImageBind-Huge on one mel
    full = online_encoder_flops_per_sample(ModelConfig(), SamplingConfig())
    train = training_flops_per_sample(ModelConfig(), SamplingConfig()).per_sample
    assert 3.0e12 < full < 3.6e12
    assert 1.4 < (train + full) / train < 1.7
