"""Resuming a DeepSpeed checkpoint on another worker count (real gloo process groups, one process per rank,
no Ray): N ranks train and save, M ranks load through the universal checkpoint and save again at once; every
trainable fp32 weight and both Adam moments of the two saves are equal, and the step carries on.
(The whole job, 2 -> 1 workers on Ray with MLflow: tests/integration/test_train.py.)"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asva_platform.artifacts.checkpoint import DS_TAG, TrainerState
from asva_platform.training.checkpoint import load_engine, save_engine, to_universal

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, stage: int, directory: str, phase: str) -> None:
    """One rank: ``save`` trains 2 steps from the same init and saves; ``reload`` loads the checkpoint in
    ``directory``/saved and saves it unchanged to ``directory``/resaved, then takes one more step."""
    os.environ.update(
        DS_ACCELERATOR="cpu",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK="0",
    )
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from tests.unit.test_train_engine import make_trainer, train_steps

    trainer = make_trainer(stage, world)
    engine = trainer.engine
    root = Path(directory)
    if phase == "save":
        train_steps(trainer, 2)
        save_engine(
            engine,
            root / "saved",
            TrainerState(step=engine.global_steps, world_size=world, zero_stage=stage),
            rank == 0,
        )
    else:
        state = load_engine(engine, root / "saved", world, stage)
        assert engine.global_steps == state.step == 2
        save_engine(
            engine, root / "resaved", TrainerState(step=2, world_size=world, zero_stage=stage), rank == 0
        )
        train_steps(trainer, 1)  # the restored optimizer steps on
        assert engine.global_steps == 3
    dist.barrier()
    dist.destroy_process_group()


def _run(world: int, stage: int, directory: Path, phase: str) -> None:
    mp.spawn(_rank, args=(world, _free_port(), stage, str(directory), phase), nprocs=world)


def _universal_state(checkpoint: Path, scratch: Path) -> dict[str, torch.Tensor]:
    """Every parameter's fp32 weight and Adam moments, whole (the universal checkpoint's per-parameter files)."""
    out = to_universal(checkpoint, scratch)
    state = {}
    for f in sorted((out / "zero").glob("*/*.pt")):
        if f.stem in ("fp32", "exp_avg", "exp_avg_sq"):
            value = torch.load(f, weights_only=False)
            state[f"{f.parent.name}/{f.stem}"] = value["param"] if isinstance(value, dict) else value
    return state


def _zero0_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A ZeRO-0 checkpoint keeps module and optimizer whole in one file."""
    saved = torch.load(checkpoint / DS_TAG / "mp_rank_00_model_states.pt", weights_only=False)
    state = {f"module/{k}": v for k, v in saved["module"].items()}
    for i, s in saved["optimizer"]["state"].items():
        state.update({f"optimizer/{i}/{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return state


# CI runs a shrink (ZeRO-3, 2 -> 1 ranks) and a growth (ZeRO-2, 1 -> 2); each case takes 0.5-1.3 min on a
# 2-core box, the other three run with `make test-all`
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "stage, before, after",
    [
        pytest.param(0, 2, 1, marks=SLOW),
        pytest.param(1, 2, 1, marks=SLOW),
        (2, 1, 2),
        (3, 2, 1),
        pytest.param(3, 1, 2, marks=SLOW),
    ],
)
def test_weights_and_adam_moments_survive_a_reshard(stage, before, after, tmp_path):
    _run(before, stage, tmp_path, "save")
    _run(after, stage, tmp_path, "reload")
    if stage == 0:  # nothing to convert: every rank's file is the whole state
        first, second = _zero0_state(tmp_path / "saved"), _zero0_state(tmp_path / "resaved")
    else:
        first = _universal_state(tmp_path / "saved", tmp_path / "u1")
        second = _universal_state(tmp_path / "resaved", tmp_path / "u2")
        assert any(k.endswith("/exp_avg_sq") for k in first) and any(k.endswith("/fp32") for k in first)
    assert first.keys() == second.keys() and first
    # exact on purpose: a reshard moves and copies these tensors, no arithmetic
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, different[:5]
    assert any(first[k].abs().sum() > 0 for k in first if k.endswith("exp_avg_sq") or "/exp_avg_sq" in k)
