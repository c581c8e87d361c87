"""Checkpoints at run time: resolve a reference, load the trained 3D UNet it names, consolidate and export a
training checkpoint. (Their layout and records: :mod:`asva_platform.artifacts.checkpoint`.)

A reference is one of:

* ``init``: no checkpoint, the model section's own initialisation (``model.init_unet``, else the
  inflated ``model.pretrained_sd``): evaluating an untrained model;
* a storage URI or local path of an **exported UNet folder** (diffusers ``save_pretrained``:
  ``config.json`` + weights), as the training job writes under ``<run>/export``;
* a storage URI or local path of a **training checkpoint** (Ray Train + DeepSpeed: ``trainer_state.json``,
  ``ds/`` shards of every rank), consolidated with DeepSpeed's ``zero_to_fp32``
  (:func:`consolidated_state_dict`); a run directory holding several ``step_*`` checkpoints means its latest one;
* an **MLflow run id** (or ``runs:/<id>``) of a training run: its ``asva.export_uri`` tag, else its
  ``asva.checkpoint_uri`` tag, is resolved as above.

:func:`resolve_checkpoint` is cheap (tags and listings, no weights) so jobs can validate a reference before
they take cluster resources; :func:`load_trained_unet` loads the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch

from asva_model.build import build_unet
from asva_model.config import ModelConfig
from asva_model.weights import load_strict
from asva_platform.artifacts.checkpoint import (
    DS_TAG,
    EMA_FILE,
    INIT_REF,
    STATE_FILE,
    ResolvedCheckpoint,
    TrainerState,
    checkpoint_step,
)
from asva_platform.errors import UserError
from asva_platform.inference.weights import RANDOM_INIT_SEED
from asva_platform.storage import Storage, is_s3, join, parse_uri
from asva_platform.tracking import TAG_CHECKPOINT, TAG_EXPORT, check_tracking_server

EXPORT_MARKER = "config.json"
SAVED_AUDIO_ENCODER = "audio_encoder"
"""The folder beside an exported ``unet`` folder that holds the audio encoder saved with it (the authors'
release: ``checkpoint-N/modules/{unet,audio_encoder}``, the encoder saved from an fp16-cast copy)."""
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def is_run_ref(ref: str) -> bool:
    """True if ``ref`` names an MLflow run (``runs:/<id>`` or a bare 32-hex run id that is not a local path)."""
    if ref.startswith("runs:/"):
        return True
    return bool(_RUN_ID.match(ref)) and not Path(ref).exists()


def _run_id_of(ref: str) -> str:
    run_id = ref[len("runs:/") :].strip("/").split("/")[0] if ref.startswith("runs:/") else ref
    if not _RUN_ID.match(run_id):
        raise UserError(f"checkpoint {ref!r}: not an MLflow run id (32 hex characters)")
    return run_id


def _classify_folder(ref: str, uri: str, storage: Storage, run_id: str = "") -> ResolvedCheckpoint:
    """Decide what the folder at ``uri`` holds (from its file names only)."""
    if not is_s3(uri):
        uri = parse_uri(uri).key
        if not Path(uri).exists():
            raise UserError(f"checkpoint {ref!r}: {uri} does not exist")
    if storage.exists(join(uri, EXPORT_MARKER)):
        return ResolvedCheckpoint(ref, "export", uri, run_id, checkpoint_step(uri))
    if storage.exists(join(uri, STATE_FILE)):
        return ResolvedCheckpoint(ref, "training", uri, run_id, _training_step(storage, uri))
    # A training run directory: its newest checkpoint (step_XXXXXXXX/trainer_state.json) wins.
    base = str(uri).rstrip("/")
    states = [f for f in storage.list(uri) if f.endswith("/" + STATE_FILE) and f[len(base) :].count("/") == 2]
    if states:
        latest = max(states, key=lambda f: (checkpoint_step(f.rsplit("/", 2)[-2]) or -1, f))
        folder = latest[: -len(STATE_FILE) - 1]
        return ResolvedCheckpoint(ref, "training", folder, run_id, _training_step(storage, folder))
    raise UserError(
        f"checkpoint {ref!r}: {uri} holds neither an exported UNet ({EXPORT_MARKER}) nor a training "
        f"checkpoint ({STATE_FILE})"
    )


def _training_step(storage: Storage, folder: str) -> int | None:
    try:
        return int(storage.read_json(join(folder, STATE_FILE)).get("step"))
    except (ValueError, TypeError):
        return checkpoint_step(folder)


def resolve_checkpoint(ref: str, storage: Storage, tracking_uri: str = "") -> ResolvedCheckpoint:
    """Where ``ref`` points (see the module doc); raises :class:`UserError` (one line) if it cannot be used."""
    ref = (ref or "").strip()
    if ref in ("", INIT_REF):
        return ResolvedCheckpoint(INIT_REF, "init")
    if is_s3(ref) or not is_run_ref(ref):
        return _classify_folder(ref, ref, storage)
    run_id = _run_id_of(ref)
    if not tracking_uri:
        raise UserError(f"checkpoint {ref!r} is an MLflow run id but no tracking URI is configured")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_tracking_server(tracking_uri)  # a quick one-line error instead of MLflow's retries
    try:
        tags = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    except MlflowException as err:
        raise UserError(
            f"checkpoint {ref!r}: MLflow run not found at {tracking_uri} ({str(err).splitlines()[0][:160]})"
        ) from None
    for tag in (TAG_EXPORT, TAG_CHECKPOINT):
        if tags.get(tag):
            resolved = _classify_folder(ref, tags[tag], storage, run_id)
            if resolved.step is None and tag == TAG_EXPORT and tags.get(TAG_CHECKPOINT):
                # an export carries no step of its own; the run's checkpoint tag does
                resolved = dataclasses.replace(resolved, step=checkpoint_step(tags[TAG_CHECKPOINT]))
            return resolved
    raise UserError(
        f"checkpoint {ref!r}: MLflow run {run_id} has neither a {TAG_EXPORT} nor a {TAG_CHECKPOINT} tag "
        "(is it a training run that saved a checkpoint?)"
    )


def checkpoint_fingerprint(resolved: ResolvedCheckpoint, storage: Storage) -> str:
    """sha256 over the checkpoint's file names and versions (S3 ETags, local size + mtime), without reading
    weights: changes whenever the folder is rewritten (e.g. a re-export after more training)."""
    h = hashlib.sha256(
        json.dumps({k: v for k, v in resolved.to_json().items() if k != "ref"}, sort_keys=True).encode()
    )
    if resolved.kind == "init":
        return h.hexdigest()
    base = str(resolved.uri).rstrip("/")
    for item in storage.list(resolved.uri):
        u = parse_uri(item)
        if u.is_s3:
            version = storage.client.head_object(Bucket=u.bucket, Key=u.key).get("ETag", "")
        else:
            st = os.stat(u.key)
            version = f"{st.st_size}:{st.st_mtime_ns}"
        h.update(f"{item[len(base) :]}|{version}\n".encode())
    return h.hexdigest()


def load_trained_unet(
    model_cfg: ModelConfig, resolved: ResolvedCheckpoint, storage: Storage, device: str = "cpu"
):
    """The 3D UNet (eval mode, no grads, fp32) of a resolved checkpoint, in the architecture ``model_cfg`` describes.

    An export is an ``init_unet`` folder (loaded with ``from_pretrained`` and checked against ``model.unet``);
    a training checkpoint is consolidated and loaded strictly into the architecture ``model`` describes
    (built without weights first, so the pretrained SD weights are not read for nothing). Weights that do not
    fit raise ValueError naming the mismatch; ``init`` is the model section's own initialisation.
    """
    model_cfg = dataclasses.replace(model_cfg, gradient_checkpointing=False)  # inference
    with tempfile.TemporaryDirectory(prefix="asva-unet-") as scratch:
        if resolved.kind == "training":
            unet = build_unet(model_cfg, "meta")
            state = consolidated_state_dict(local_checkpoint(storage, resolved.uri, scratch))
            load_strict(unet, state, f"checkpoint {resolved.ref!r} (model.unet)")
            unet = unet.to(device=device, dtype=torch.float32)
        else:
            folder = resolved.uri if resolved.kind == "export" else model_cfg.init_unet
            if folder and is_s3(folder):
                folder = str(storage.localize(folder, scratch))
            model_cfg = dataclasses.replace(model_cfg, init_unet=folder)
            with torch.random.fork_rng(devices=[]):  # new modules' random init: the same in every worker
                torch.manual_seed(RANDOM_INIT_SEED)
                unet = build_unet(model_cfg, device)
    return unet.eval().requires_grad_(False)


def saved_audio_encoder(resolved: ResolvedCheckpoint, storage: Storage) -> str:
    """The audio encoder folder saved with an export (``<parent>/audio_encoder`` beside the UNet folder), or
    '' when it has none (our training checkpoints: their encoder is ``model.audio_encoder_weights``)."""
    if resolved.kind != "export":
        return ""
    uri = str(resolved.uri).rstrip("/")
    parent = uri.rsplit("/", 1)[0] if is_s3(uri) else str(Path(uri).parent)
    folder = join(parent, SAVED_AUDIO_ENCODER)
    return folder if storage.exists(join(folder, EXPORT_MARKER)) else ""


# ---------------------------------------------------------------------------------------------
# Consolidation and export


def consolidated_state_dict(directory: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """The full fp32 UNet state dict from a (downloaded) checkpoint of any ZeRO stage, frozen weights
    included; with ``ema`` the trainable weights are replaced by their EMA."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if TrainerState.load(directory).zero_stage == 0:
        # plain data parallel: the full weights are in the model states file (zero_to_fp32 cannot read this
        # layout; under bf16/fp16 these are the 16-bit weights, not the fp32 masters)
        module = torch.load(
            Path(directory, DS_TAG, "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False
        )["module"]
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


def export_unet(
    model_cfg: ModelConfig, checkpoint_dir: str | Path, out_dir: str | Path, ema: bool = False
) -> Path:
    """Write ``out_dir`` (config.json + diffusion_pytorch_model.safetensors) from a local checkpoint."""
    model = build_unet(model_cfg, "meta")
    load_strict(model, consolidated_state_dict(checkpoint_dir, ema=ema), f"{checkpoint_dir} (model.unet)")
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)


def export_checkpoint(
    model_cfg: ModelConfig, checkpoint_uri: str, out_uri: str, storage: Storage, ema: bool = False
) -> str:
    """Consolidate ``checkpoint_uri`` (local or s3://) into a UNet folder at ``out_uri``; returns ``out_uri``."""
    with tempfile.TemporaryDirectory(prefix="asva-export-") as scratch:
        ckpt = local_checkpoint(storage, checkpoint_uri, scratch)
        TrainerState.load(ckpt)  # a clear error if this is not one of our checkpoints
        if is_s3(out_uri):
            folder = export_unet(model_cfg, ckpt, Path(scratch) / "unet", ema)
            storage.upload_dir(folder, out_uri)
        else:
            export_unet(model_cfg, ckpt, out_uri, ema)
    return out_uri
