"""Model config section: the tiny geometry as data, validation at construction, YAML files, model-info CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asva_model.config import (
    AudioEncoderConfig,
    ModelConfig,
    NoiseSchedulerConfig,
    UNetConfig,
    VAEConfig,
)
from asva_model.errors import ConfigError
from asva_platform.config import from_dict
from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.experiment import load_experiment

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cls", [ModelConfig, UNetConfig, AudioEncoderConfig, VAEConfig, NoiseSchedulerConfig]
)
def test_every_field_is_documented(cls):
    from asva_platform.config import field_docs

    assert set(field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}


def test_defaults_are_the_paper():
    cfg = ModelConfig()
    assert cfg.unet.block_out_channels == [320, 640, 1280, 1280] and cfg.unet.attention_head_dim == 8
    assert cfg.vae.scaling_factor == 0.18215 and cfg.audio_cond_drop_prob == 0.2
    assert cfg.trainable_modules == ["_temp", "_audio"]
    s = cfg.noise_scheduler
    assert (s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule) == (
        1000,
        0.00085,
        0.012,
        "scaled_linear",
    )


def test_tiny_geometry_is_the_yaml_file():
    cfg = tiny_model_config()
    assert cfg.unet == UNetConfig(
        block_out_channels=[32, 64],
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=32,
        audio_cross_attention_dim=32,
        norm_num_groups=8,
    )
    assert cfg.audio_encoder == AudioEncoderConfig(embed_dim=32, num_blocks=2, num_heads=2, head_out_dim=32)
    assert cfg.vae == VAEConfig(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8)
    assert (
        cfg.gradient_checkpointing
        and not tiny_model_config(gradient_checkpointing=False).gradient_checkpointing
    )
    assert not hasattr(cfg, "preset") and not hasattr(cfg, "resolved")


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: UNetConfig(norm_num_groups=7),
            "block_out_channels: 320 is not divisible by norm_num_groups=7",
        ),
        (lambda: AudioEncoderConfig(num_heads=5), "embed_dim: 768 is not divisible by num_heads=5"),
        (lambda: VAEConfig(scaling_factor=0.0), "scaling_factor: must be > 0"),
        (lambda: NoiseSchedulerConfig(beta_start=0.5), "beta_start: need 0 < beta_start < beta_end < 1"),
        (lambda: ModelConfig(audio_cond_drop_prob=-0.1), "audio_cond_drop_prob: must be in"),
        (
            lambda: ModelConfig(unet=UNetConfig(audio_cross_attention_dim=512)),
            "unet.audio_cross_attention_dim: 512 != audio_encoder.embed_dim 768",
        ),
        (lambda: dataclasses.replace(ModelConfig(), trainable_modules=[]), "trainable_modules: must name"),
    ],
)
def test_sections_validate_when_built_in_python(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"audio_cond_drop_prob": 1.5}, "audio_cond_drop_prob: must be in"),
        (
            {"unet": {"audio_cross_attention_dim": 512}},
            "audio_cross_attention_dim: 512 != audio_encoder.embed_dim",
        ),
        ({"unet": {"block_out_channels": [320, 650]}}, "not divisible by norm_num_groups"),
        ({"noise_scheduler": {"beta_schedule": "cosine"}}, "beta_schedule: must be one of"),
        ({"trainable_modules": []}, "trainable_modules: must name"),
        ({"vae": {"latent_channels": 8}}, "vae.latent_channels"),
        ({"unet": {"layers": 2}}, "unet.layers: unknown key"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, data, "f.yaml: model")


def test_platform_loader_accepts_the_section(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "base: " + str(REPO / "configs/model/tiny.yaml") + "\nmodel:\n  audio_cond_drop_prob: 0.1\n"
    )
    cfg = load_experiment(str(path))
    assert cfg.model == tiny_model_config(audio_cond_drop_prob=0.1)
    path.write_text("model:\n  unet:\n    audio_cross_attention_dim: 64\n")
    with pytest.raises(ConfigError, match="audio_cross_attention_dim"):
        load_experiment(str(path))


def test_shipped_model_yamls_load():
    full = load_experiment(REPO / "configs" / "model" / "full.yaml").model
    assert (full.unet, full.audio_encoder, full.vae) == (UNetConfig(), AudioEncoderConfig(), VAEConfig())
    tiny = load_experiment(REPO / "configs" / "model" / "tiny.yaml").model
    assert tiny == tiny_model_config()
    # the tiny recipe takes its geometry from the same file
    assert load_experiment(REPO / "configs" / "tiny.yaml").model.unet == tiny.unet


def asva_model_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "asva_platform.cli", "model-info", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_model_info_cli_prints_one_json_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("base: " + str(REPO / "configs/model/tiny.yaml") + "\n")
    done = asva_model_info("--config", str(path), "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["total"] == out["trainable"] + out["frozen"] == sum(out["groups"].values())
    assert set(out["groups"]) >= {
        "ff_temporal_conv",
        "temporal_attn",
        "audio_cross_attn",
        "unet2d",
        "audio_encoder",
    }
    assert (
        out["trainable"]
        == out["groups"]["ff_temporal_conv"]
        + out["groups"]["temporal_attn"]
        + out["groups"]["audio_cross_attn"]
    )
    assert out["geometry"] == "UNet 32/64 x1, audio encoder 32 x2, VAE 16/32"
    assert out["protocol"] == "exact" and out["protocol_quirks"]["generate.sampler"] == "standard"
    done = asva_model_info("--config", str(REPO / "configs/avsync15.yaml"))  # the reproduction recipe
    assert done.returncode == 0, done.stderr
    assert "protocol: authors (frame_picking=authors" in done.stdout
    path.write_text("model:\n  preset: tiny\n")  # the old preset key: the geometry is data now
    done = asva_model_info("--config", str(path), "--json")
    assert done.returncode == 2 and "model.preset: unknown key" in done.stderr
