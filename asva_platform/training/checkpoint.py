"""Training checkpoints: every rank's DeepSpeed shard + rank 0's trainer state and EMA, in one directory.

Layout of one checkpoint (Ray Train merges every rank's files into ``<run>/step_XXXXXXXX/``)::

    ds/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   per rank (optimizer + fp32 master partition)
    ds/zero_pp_rank_<r>_mp_rank_00_model_states.pt   per rank under ZeRO-3 (mp_rank_00_model_states.pt below)
    latest, zero_to_fp32.py                          DeepSpeed's tag pointer and consolidation script
    trainer_state.json                               step, epoch, data position, MLflow run id, checksum
    ema.pt                                           EMA of the trainable weights (when enabled)

``python <ckpt>/zero_to_fp32.py <ckpt> out/`` (or :func:`consolidated_state_dict`) rebuilds the full fp32
UNet state dict from any stage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from asva_platform.training.ema import gathered

DS_TAG = "ds"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (0-based)."""
    batches_in_epoch: int = 0
    """Micro-batches this rank consumed in ``epoch`` (resume skips them: the data position)."""
    samples_seen: int = 0
    """Clips trained on, all ranks."""
    mlflow_run_id: str = ""
    """The MLflow run this training logs to."""
    param_checksum: str = ""
    """sha256 of the trainable weights at save time."""
    world_size: int = 0
    """Ranks that wrote the DeepSpeed shards (ZeRO shards only load at the same world size)."""
    zero_stage: int = 0
    """ZeRO stage of the shards."""
    extra: dict = field(default_factory=dict)
    """Anything else worth keeping (cache id, data mode)."""

    def save(self, directory: str | Path) -> None:
        Path(directory, STATE_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> TrainerState:
        path = Path(directory, STATE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_FILE})")
        return cls(**json.loads(path.read_text()))


def trainable_checksum(module: torch.nn.Module, is_rank0: bool) -> str:
    """sha256 over the trainable weights in name order (fp32 bytes); '' on ranks other than 0.
    Collective under ZeRO-3 (weights are gathered), so every rank must call it."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    digest = hashlib.sha256()
    with gathered([p for _, p in named]):
        if is_rank0:
            for name, p in named:
                digest.update(name.encode())
                digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest() if is_rank0 else ""


def save_engine(engine, directory: str | Path, state: TrainerState, is_rank0: bool) -> None:
    """Every rank writes its DeepSpeed shard; rank 0 adds the trainer state."""
    engine.save_checkpoint(str(directory), tag=DS_TAG)
    if is_rank0:
        state.save(directory)


def load_engine(engine, directory: str | Path, world_size: int, zero_stage: int) -> TrainerState:
    """Restore model, optimizer, LR scheduler and step from a checkpoint directory (every rank)."""
    state = TrainerState.load(directory)
    if state.world_size and state.world_size != world_size and zero_stage > 0:
        raise ValueError(f"checkpoint {directory} holds ZeRO shards of {state.world_size} ranks but this run has "
                         f"{world_size}; resume with train.num_workers={state.world_size}")
    if state.zero_stage != zero_stage:
        raise ValueError(f"checkpoint {directory} was written with ZeRO stage {state.zero_stage}, "
                         f"this run uses {zero_stage}; set train.zero_stage={state.zero_stage}")
    path, _ = engine.load_checkpoint(str(directory), tag=DS_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint under tag {DS_TAG!r}")
    if engine.global_steps != state.step:
        raise ValueError(f"{directory}: DeepSpeed is at step {engine.global_steps}, trainer state says {state.step}")
    return state


def consolidated_state_dict(directory: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """The full fp32 UNet state dict from a (downloaded) checkpoint of any ZeRO stage, frozen weights
    included; with ``ema`` the trainable weights are replaced by their EMA."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if TrainerState.load(directory).zero_stage == 0:
        # plain data parallel: the full weights are in the model states file (zero_to_fp32 cannot read this
        # layout; under bf16/fp16 these are the 16-bit weights, not the fp32 masters)
        module = torch.load(Path(directory, DS_TAG, "mp_rank_00_model_states.pt"), map_location="cpu",
                            weights_only=False)["module"]
        state = dict(module)
    else:
        state = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=DS_TAG)
    state = {k: v.float() for k, v in state.items()}
    if ema:
        path = Path(directory) / "ema.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the checkpoint has no EMA (train.ema was off)")
        for name, value in torch.load(path, map_location="cpu", weights_only=True).items():
            if name not in state:
                raise ValueError(f"{path}: EMA weight {name} is not in the model")
            state[name] = value.float()
    return state
