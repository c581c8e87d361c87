"""DeepSpeed engine pieces in one process (world size 1, gloo): checkpoint save/load round trip, consolidation
and export for ZeRO-0 and ZeRO-3, and the EMA update."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist

from asva_model.models.unet import AudioUNet3D
from asva_platform.artifacts.checkpoint import TrainerState
from asva_platform.dev.fixtures import tiny_model_config, tiny_model_overrides
from asva_platform.dev.synthetic_batches import SyntheticSource
from asva_platform.experiment import load_experiment
from asva_platform.inference.checkpoints import consolidated_state_dict, export_unet
from asva_platform.training.checkpoint import (
    load_engine,
    save_engine,
    trainable_checksum,
)
from asva_platform.training.deepspeed_setup import state_bytes
from asva_platform.training.ema import TrainableEMA
from asva_platform.training.job import trainer_spec
from asva_platform.training.loop import LocalContext, WorkerTrainer
from asva_platform.training.spec import RunSpec

MODEL = tiny_model_config(gradient_checkpointing=False)


@pytest.fixture(scope="module", autouse=True)
def process_group():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    ).items():
        os.environ.setdefault(k, v)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def make_trainer(stage: int, world: int = 1) -> WorkerTrainer:
    """The training loop's trainer in this process (this rank of a ``world``-rank group the caller started), on
    a synthetic batch of the tiny geometry."""
    experiment = load_experiment(
        None,
        [
            *tiny_model_overrides(),
            "sampling.num_frames=3",
            "sampling.clip_duration=0.5",
            "sampling.image_size=[8,8]",
            f"train.num_workers={world}",
            "train.use_gpu=false",
            "train.batch_size_per_worker=1",
            "train.gradient_accumulation_steps=1",
            f"train.zero_stage={stage}",
            "train.precision=fp32",
            "train.lr=1e-2",
            "train.ema=false",
            "model.gradient_checkpointing=false",
        ],
    )
    spec = trainer_spec(experiment, RunSpec("", "", ""))
    return WorkerTrainer(spec, LocalContext(), SyntheticSource(spec, torch.device("cpu"), seed=1))


def make_engine(stage: int):
    return make_trainer(stage).engine


def train_steps(trainer: WorkerTrainer, n: int) -> None:
    """``n`` optimizer steps of the loop's own micro-step."""
    for _ in range(n):
        trainer.micro_step(trainer.source.batch)
        trainer.state.step = trainer.engine.global_steps


@pytest.mark.parametrize("stage", [0, 3])
def test_checkpoint_round_trip_consolidation_and_export(stage, tmp_path):
    trainer = make_trainer(stage)
    engine = trainer.engine
    train_steps(trainer, 2)
    checksum = trainable_checksum(engine.module, True)
    state = TrainerState(
        step=engine.global_steps,
        epoch=1,
        batches_in_epoch=3,
        mlflow_run_id="r",
        world_size=1,
        zero_stage=stage,
        param_checksum=checksum,
    )
    save_engine(engine, tmp_path, state, True)
    assert (tmp_path / "trainer_state.json").is_file() and (tmp_path / "ds").is_dir()

    again = make_trainer(stage)
    fresh = again.engine
    assert trainable_checksum(fresh.module, True) != checksum  # trained weights differ from the init
    loaded = load_engine(fresh, tmp_path, world_size=1, zero_stage=stage)
    assert (loaded.step, loaded.epoch, loaded.batches_in_epoch) == (2, 1, 3)
    assert fresh.global_steps == 2 and trainable_checksum(fresh.module, True) == checksum
    train_steps(again, 1)  # optimizer state came back too: the next step runs from the restored moments
    assert fresh.global_steps == 3

    with pytest.raises(ValueError, match="ZeRO stage"):
        load_engine(
            make_engine(2 if stage == 0 else 0), tmp_path, world_size=1, zero_stage=2 if stage == 0 else 0
        )

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
    trainer = make_trainer(2)
    engine = trainer.engine
    ema = TrainableEMA(engine.module, decay=0.75, is_rank0=True)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    train_steps(trainer, 1)
    ema.update()
    params = dict(engine.module.named_parameters())
    assert set(ema.shadow) == {n for n, p in params.items() if p.requires_grad}
    for name, value in ema.shadow.items():
        assert torch.allclose(value, 0.75 * before[name] + 0.25 * params[name].detach().float())


def test_state_bytes_counts_weights_and_adam_moments():
    trainer = make_trainer(0)
    engine = trainer.engine
    train_steps(trainer, 1)  # Adam state exists after the first step
    weights = sum(p.numel() for p in engine.module.parameters()) * 4
    trainable = sum(p.numel() for p in engine.module.parameters() if p.requires_grad) * 4
    assert state_bytes(engine) >= weights + 2 * trainable


def test_a_failed_local_save_leaves_no_checkpoint_folder_behind(tmp_path, monkeypatch):
    import tempfile

    trainer = make_trainer(0)
    train_steps(trainer, 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def disk_full(directory):
        (tmp_path / "seen").write_text(directory)
        raise OSError("No space left on device")

    trainer._save = disk_full
    with pytest.raises(OSError, match="No space"):
        trainer._report({"step_time_s": 0.1, "samples_per_s": 10.0, "loss": 0.5}, with_checkpoint=True)
    assert (tmp_path / "seen").read_text().startswith(str(tmp_path / "asva-ckpt-"))
    assert not list(tmp_path.glob("asva-ckpt-*"))
    assert not trainer.context.reports  # nothing reported for a checkpoint that was never written


def test_the_checksum_gathers_in_chunks_and_hashes_the_same(monkeypatch):
    from asva_platform.training import checkpoint

    engine = make_engine(3)
    whole = trainable_checksum(engine.module, True)
    runs = checkpoint._chunks([(n, p) for n, p in engine.module.named_parameters() if p.requires_grad], 1000)
    assert len(runs) > 10 and all(sum(p.ds_numel for _, p in r) <= 1000 or len(r) == 1 for r in runs)
    monkeypatch.setattr(checkpoint, "CHECKSUM_GATHER_ELEMENTS", 1000)
    assert trainable_checksum(engine.module, True) == whole
