"""Export a training checkpoint as a diffusers ``save_pretrained`` UNet folder (loadable as ``model.init_unet``).

The DeepSpeed shards of every rank are consolidated with DeepSpeed's own ``zero_to_fp32`` logic (so
any ZeRO stage and world size works), frozen weights included; with ``ema`` the trainable weights are
the EMA's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from asva_platform.storage import Storage, is_s3
from asva_platform.training.checkpoint import TrainerState, consolidated_state_dict


def local_checkpoint(storage: Storage, checkpoint_uri: str, scratch: str | Path) -> Path:
    """A local directory with the whole checkpoint (downloaded when it lives on S3). pyarrow copies the tree
    because Ray's S3 writes leave directory-marker objects that a plain object-by-object copy trips on."""
    if not is_s3(checkpoint_uri):
        return Path(checkpoint_uri)
    import pyarrow.fs as pafs

    dest = Path(scratch) / "checkpoint"
    fs, path = storage.filesystem(checkpoint_uri)
    pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return dest


def export_unet(model_cfg, checkpoint_dir: str | Path, out_dir: str | Path, ema: bool = False) -> Path:
    """Write ``out_dir`` (config.json + diffusion_pytorch_model.safetensors) from a local checkpoint."""
    from asva_model.build import unet_kwargs
    from asva_model.models.unet import AudioUNet3D

    state = consolidated_state_dict(checkpoint_dir, ema=ema)
    with torch.device("meta"):
        model = AudioUNet3D(**unet_kwargs(model_cfg.resolved().unet))
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{checkpoint_dir}: consolidated weights do not match model.unet "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=True, assign=True)
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
