"""The training-checkpoint contract: its layout, the trainer state file, consolidation and export.

Layout of one checkpoint (Ray Train merges every rank's files into ``<run>/step_XXXXXXXX/``)::

    ds/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   per rank (optimizer + fp32 master partition)
    ds/zero_pp_rank_<r>_mp_rank_00_model_states.pt   per rank under ZeRO-3 (mp_rank_00_model_states.pt below)
    latest, zero_to_fp32.py                          DeepSpeed's tag pointer and consolidation script
    trainer_state.json                               step, epoch, data position, MLflow run id, checksum
    ema.pt                                           EMA of the trainable weights (when enabled)

The training stage writes it (:mod:`asva_platform.training.checkpoint`); anyone may read it:
:func:`consolidated_state_dict` rebuilds the full fp32 UNet state dict from any ZeRO stage and world size
(DeepSpeed's own ``zero_to_fp32`` logic, frozen weights included), and :func:`export_checkpoint` writes it
as a diffusers ``save_pretrained`` UNet folder (loadable as ``model.init_unet`` or by ``AudioUNet3D.from_pretrained``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from asva_model.build import build_unet
from asva_model.weights import load_strict
from asva_platform.storage import Storage, is_s3

DS_TAG = "ds"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.pt"


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
    """Ranks that wrote the DeepSpeed shards (another worker count resumes through a universal checkpoint)."""
    zero_stage: int = 0
    """ZeRO stage of the shards."""
    global_batch_size: int = 0
    """Clips per optimizer step when saved (0 in checkpoints older than this field: samples_seen / step)."""
    extra: dict = field(default_factory=dict)
    """Anything else worth keeping (cache id, data mode)."""

    def save(self, directory: str | Path) -> None:
        Path(directory, STATE_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @property
    def saved_global_batch(self) -> int:
        """The global batch the checkpoint was trained with (0 when not known: no step yet)."""
        return self.global_batch_size or (self.samples_seen // self.step if self.step else 0)

    @classmethod
    def load(cls, directory: str | Path) -> TrainerState:
        path = Path(directory, STATE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_FILE})")
        return cls(**json.loads(path.read_text()))


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
        path = Path(directory) / EMA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the checkpoint has no EMA (train.ema was off)")
        for name, value in torch.load(path, map_location="cpu", weights_only=True).items():
            if name not in state:
                raise ValueError(f"{path}: EMA weight {name} is not in the model")
            state[name] = value.float()
    return state


def local_checkpoint(storage: Storage, checkpoint_uri: str, scratch: str | Path) -> Path:
    """A local directory with the whole checkpoint (downloaded when it lives on S3: each shard streamed to disk
    in ranged GETs; the directory-marker objects Ray's S3 writes leave are not files to ``Storage.list``)."""
    if not is_s3(checkpoint_uri):
        return Path(checkpoint_uri)
    dest = Path(scratch) / "checkpoint"
    storage.download_dir(checkpoint_uri, dest)
    return dest


def export_unet(model_cfg, checkpoint_dir: str | Path, out_dir: str | Path, ema: bool = False) -> Path:
    """Write ``out_dir`` (config.json + diffusion_pytorch_model.safetensors) from a local checkpoint."""
    model = build_unet(model_cfg, "meta")
    load_strict(model, consolidated_state_dict(checkpoint_dir, ema=ema), f"{checkpoint_dir} (model.unet)")
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)


def export_checkpoint(exp_cfg, checkpoint_uri: str, out_uri: str, ema: bool = False,
                      storage: Storage | None = None) -> str:
    """Consolidate ``checkpoint_uri`` (local or s3://) into a UNet folder at ``out_uri``; returns ``out_uri``."""
    storage = storage or Storage.from_config(exp_cfg.storage)
    with tempfile.TemporaryDirectory(prefix="asva-export-") as scratch:
        ckpt = local_checkpoint(storage, checkpoint_uri, scratch)
        TrainerState.load(ckpt)  # a clear error if this is not one of our checkpoints
        if is_s3(out_uri):
            folder = export_unet(exp_cfg.model, ckpt, Path(scratch) / "unet", ema)
            storage.upload_dir(folder, out_uri)
        else:
            export_unet(exp_cfg.model, ckpt, out_uri, ema)
    return out_uri
