"""DeepSpeed engine pieces in one process (world size 1, gloo): checkpoint save/load round trip, consolidation
and export for ZeRO-0 and ZeRO-3, and the EMA update."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist

from asva_model.build import build_noise_scheduler, build_unet
from asva_model.models.audio_encoder import segment_mask
from asva_model.models.unet import AudioUNet3D
from asva_model.objective import loss_from_inputs, prepare_cached_batch
from asva_platform.artifacts.checkpoint import TrainerState, consolidated_state_dict, export_unet
from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.training.checkpoint import (
    load_engine,
    save_engine,
    trainable_checksum,
)
from asva_platform.training.config import TrainConfig
from asva_platform.training.deepspeed_setup import initialize_engine, state_bytes
from asva_platform.training.ema import TrainableEMA

MODEL = tiny_model_config(gradient_checkpointing=False)


@pytest.fixture(scope="module", autouse=True)
def process_group():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
        os.environ.setdefault(k, v)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def make_engine(stage: int):
    torch.manual_seed(0)
    return initialize_engine(build_unet(MODEL), TrainConfig(num_workers=1, use_gpu=False, batch_size_per_worker=1,
                                                            gradient_accumulation_steps=1, zero_stage=stage,
                                                            precision="fp32", lr=1e-2), world_size=1)


def train_steps(engine, n: int) -> None:
    sched = build_noise_scheduler(MODEL)
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(1, 4, 3, 4, 4, generator=g)
    mask = segment_mask(3, 12, 19)[None]
    for i in range(n):
        gen = torch.Generator().manual_seed(i)
        inputs = prepare_cached_batch(mean, torch.full_like(mean, 0.1), torch.randn(1, 229, 32, generator=g),
                                      torch.zeros(1, 229, 32), mask, torch.randn(1, 77, 32, generator=g), gen)
        engine.backward(loss_from_inputs(engine, sched, inputs, 0.0, gen))
        engine.step()


@pytest.mark.parametrize("stage", [0, 3])
def test_checkpoint_round_trip_consolidation_and_export(stage, tmp_path):
    engine = make_engine(stage)
    train_steps(engine, 2)
    checksum = trainable_checksum(engine.module, True)
    state = TrainerState(step=engine.global_steps, epoch=1, batches_in_epoch=3, mlflow_run_id="r", world_size=1,
                         zero_stage=stage, param_checksum=checksum)
    save_engine(engine, tmp_path, state, True)
    assert (tmp_path / "trainer_state.json").is_file() and (tmp_path / "ds").is_dir()

    fresh = make_engine(stage)
    assert trainable_checksum(fresh.module, True) != checksum  # trained weights differ from the init
    loaded = load_engine(fresh, tmp_path, world_size=1, zero_stage=stage)
    assert (loaded.step, loaded.epoch, loaded.batches_in_epoch) == (2, 1, 3)
    assert fresh.global_steps == 2 and trainable_checksum(fresh.module, True) == checksum
    train_steps(fresh, 1)  # optimizer state came back too: the next step runs from the restored moments
    assert fresh.global_steps == 3

    with pytest.raises(ValueError, match="ZeRO stage"):
        load_engine(make_engine(2 if stage == 0 else 0), tmp_path, world_size=1, zero_stage=2 if stage == 0 else 0)

    full = consolidated_state_dict(tmp_path)
    reference = AudioUNet3D.from_pretrained(export_unet(MODEL, tmp_path, tmp_path / "unet")).state_dict()
    assert set(full) == set(reference)
    assert all(torch.equal(full[k], reference[k]) for k in full)
    from asva_platform.training.ema import gathered

    params = dict(engine.module.named_parameters())
    with gathered(list(params.values())):
        for name in ("conv_in.conv_temp.weight", "conv_in.weight"):
            assert torch.equal(full[name], params[name].detach().float())


def test_ema_update_is_a_lerp_of_the_trainable_weights():
    engine = make_engine(2)
    ema = TrainableEMA(engine.module, decay=0.75, is_rank0=True)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    train_steps(engine, 1)
    ema.update()
    params = dict(engine.module.named_parameters())
    assert set(ema.shadow) == {n for n, p in params.items() if p.requires_grad}
    for name, value in ema.shadow.items():
        assert torch.allclose(value, 0.75 * before[name] + 0.25 * params[name].detach().float())


def test_state_bytes_counts_weights_and_adam_moments():
    engine = make_engine(0)
    train_steps(engine, 1)  # Adam state exists after the first step
    weights = sum(p.numel() for p in engine.module.parameters()) * 4
    trainable = sum(p.numel() for p in engine.module.parameters() if p.requires_grad) * 4
    assert state_bytes(engine) >= weights + 2 * trainable
