"""The frozen-weights contract: model weight files localised from storage, and the frozen encoders (VAE, audio
encoder) loaded identically by every stage, on the driver and on every actor.

Random-init parts (no pretrained path: tests, demos) are built under a fixed seed, so the driver's weight
fingerprint and every actor's weights agree. Weight paths may be local or ``s3://`` (copied to a local
directory first).
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

import torch

from asva_model.build import build_audio_encoder, build_vae
from asva_model.config import ModelConfig
from asva_platform.storage import Storage, is_s3

RANDOM_INIT_SEED = 0
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_PATH_FIELDS = ("pretrained_sd", "init_unet", "audio_encoder_weights", "text_encodings", "null_text_encoding")


def localize_model_paths(
    model_cfg: ModelConfig, storage: Storage, cache_dir: str | None = None
) -> ModelConfig:
    """``model_cfg`` with every ``s3://`` weight path replaced by a downloaded local copy."""
    remote = {f: getattr(model_cfg, f) for f in _PATH_FIELDS if is_s3(getattr(model_cfg, f))}
    if not remote:
        return model_cfg
    if cache_dir is None:  # private to this process (actors on one node must not write the same files)
        cache_dir = tempfile.mkdtemp(prefix="asva-weights-")
        atexit.register(shutil.rmtree, cache_dir, True)
    return dataclasses.replace(
        model_cfg, **{f: str(storage.localize(uri, cache_dir)) for f, uri in remote.items()}
    )


def absolute_model_paths(model_cfg: ModelConfig) -> ModelConfig:
    """Local weight paths made absolute, so actors (whatever their working directory) find them."""
    local = {
        f: str(Path(getattr(model_cfg, f)).resolve())
        for f in _PATH_FIELDS
        if getattr(model_cfg, f) and not is_s3(getattr(model_cfg, f))
    }
    return dataclasses.replace(model_cfg, **local)


def load_frozen_encoders(model_cfg: ModelConfig, device: str | torch.device = "cpu", dtype: str = "fp32"):
    """``(vae, audio_encoder)`` in eval mode (no drop-path: the cache is deterministic), on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        vae = build_vae(model_cfg)
        torch.manual_seed(RANDOM_INIT_SEED)
        audio = build_audio_encoder(model_cfg)
    torch_dtype = DTYPES[dtype]

    def place(module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(device)
        return (module if torch_dtype == torch.float32 else module.to(dtype=torch_dtype)).eval()

    return place(vae), place(audio)


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's weights (names, dtypes, shapes and bytes): identifies what the cache was built with,
    whatever file format or path they came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def latent_downsample(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)
