"""The `train` config section and the DeepSpeed config derived from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from asva_platform.config import ConfigError, field_docs
from asva_platform.experiment import load_experiment
from asva_platform.training.config import TrainConfig
from asva_platform.training.deepspeed_setup import deepspeed_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_field_has_a_docstring():
    docs = field_docs(TrainConfig)
    missing = [f.name for f in dataclasses.fields(TrainConfig) if not docs.get(f.name)]
    assert not missing


def test_shipped_recipes_load_and_give_the_papers_global_batch():
    full = load_experiment(CONFIGS / "avsync15.yaml")
    assert full.train.global_batch_size == 64  # 4 per GPU x 8 GPUs x 2 accumulation steps
    tiny = load_experiment(CONFIGS / "tiny.yaml")
    assert not tiny.train.use_gpu and tiny.train.num_workers == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.precision=fp16", "train.precision: fp16 (loss scaling) needs GPUs"),
        ("train.zero_stage=4", "train.zero_stage: must be 0, 1, 2 or 3"),
        ("train.data_mode=streaming", "train.data_mode: must be one of"),
        ("train.ema_decay=1.0", "train.ema_decay: must be in (0, 1)"),
        ("train.adam_betas=[0.9]", "train.adam_betas: must be two numbers"),
    ],
)
def test_bad_values_fail_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_experiment(CONFIGS / "tiny.yaml", [override])


def test_deepspeed_config_follows_the_train_section():
    t = TrainConfig(
        num_workers=8,
        batch_size_per_worker=4,
        gradient_accumulation_steps=2,
        zero_stage=3,
        precision="bf16",
        grad_clip=1.0,
    )
    ds = deepspeed_config(t, world_size=8)
    assert ds["train_batch_size"] == 64 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 2 and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["overlap_comm"]
    assert ds["bf16"] == {"enabled": True} and ds["data_types"] == {"buffer_dtype": "bf16"}
    assert "optimizer" not in ds  # a torch AdamW over the trainable parameters is passed in instead

    fp16 = deepspeed_config(dataclasses.replace(t, precision="fp16", zero_stage=2), world_size=8)
    assert fp16["fp16"]["enabled"] and fp16["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert "bf16" not in fp16 and "data_types" not in fp16

    cpu = deepspeed_config(
        dataclasses.replace(t, use_gpu=False, precision="fp32", num_workers=2), world_size=2
    )
    assert cpu["train_batch_size"] == 16 and "overlap_comm" not in cpu["zero_optimization"]
    assert "bf16" not in cpu and "fp16" not in cpu
