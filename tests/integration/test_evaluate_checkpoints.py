"""Checkpoint references against real parts: a DeepSpeed ZeRO-2 training checkpoint written by the training
code, exported UNet folders on the S3 server, and MLflow run ids on the MLflow server."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from asva_model.build import build_unet
from asva_model.pretrained import make_tiny_pretrained
from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.errors import UserError
from asva_platform.experiment import ExperimentConfig
from asva_platform.inference.checkpoints import load_trained_unet, resolve_checkpoint
from asva_platform.storage import Storage
from asva_platform.tracking import TAG_CHECKPOINT, TAG_EXPORT, start_run

pytestmark = pytest.mark.integration

# One ZeRO-2 optimizer step on the tiny UNet in a single gloo process, saved by the training job's own
# save_engine (every rank's shard + trainer_state.json), plus the engine's weights for comparison.
DEEPSPEED_STEP = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from asva_model.build import build_audio_encoder, build_unet
    from asva_platform.artifacts.checkpoint import TrainerState
    from asva_platform.dev.fixtures import tiny_model_config
    from asva_platform.training.checkpoint import save_engine
    from asva_platform.training.config import TrainConfig
    from asva_platform.training.deepspeed_setup import initialize_engine

    out, sd = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = tiny_model_config(pretrained_sd=sd, gradient_checkpointing=False)
    torch.manual_seed(0)
    unet = build_unet(cfg)
    train = TrainConfig(num_workers=1, use_gpu=False, precision="fp32", zero_stage=2, batch_size_per_worker=1,
                        gradient_accumulation_steps=1, lr=1e-2)
    engine = initialize_engine(unet, train, 1)
    enc = build_audio_encoder(cfg)
    tokens = enc.encode(torch.randn(1, 1, 128, 204))
    x = torch.randn(1, 4, 12, 8, 8)
    eps = engine(x, torch.tensor([500]), torch.randn(1, 77, 32), tokens, enc.segment_mask(12)[None])
    engine.backward(eps.pow(2).mean())
    engine.step()
    save_engine(engine, out, TrainerState(step=1, world_size=1, zero_stage=2), True)
    torch.save({k: v.detach().clone() for k, v in engine.module.state_dict().items()}, os.path.join(out, "ref.pt"))
""")


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> ExperimentConfig:
    model = make_tiny_pretrained(tmp_path_factory.mktemp("tiny"), tiny_model_config())
    return dataclasses.replace(ExperimentConfig(), model=model)


@pytest.fixture(scope="module")
def training_checkpoint(exp, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "step_00000001"
    with socket.socket() as sock:  # a free port for the one-process gloo group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DEEPSPEED_STEP, str(out), exp.model.pretrained_sd],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _assert_weights(unet, expected: dict[str, torch.Tensor]) -> None:
    state = unet.state_dict()
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        # exact across processes on purpose: loading copies the saved weights, nothing is recomputed
        torch.testing.assert_close(state[k], v.float(), rtol=0, atol=0, msg=k)


def test_deepspeed_training_checkpoint_is_consolidated(exp, training_checkpoint):
    resolved = resolve_checkpoint(
        str(training_checkpoint.parent), Storage()
    )  # the run dir -> its newest step
    assert (resolved.kind, resolved.step, resolved.label) == ("training", 1, "step-1")
    unet = load_trained_unet(exp.model, resolved, Storage())
    expected = torch.load(training_checkpoint / "ref.pt", weights_only=True)
    _assert_weights(unet, expected)
    torch.manual_seed(0)
    init = build_unet(exp.model).state_dict()
    # exact on purpose: a seeded init draws the same numbers in any process (torch's CPU RNG is serial, not
    # threaded), and frozen weights are loaded, not computed
    changed = [k for k in init if not torch.equal(init[k], expected[k])]
    assert changed and all(
        "_temp" in k or "_audio" in k for k in changed
    )  # the step moved trainable weights only


def test_training_checkpoint_and_export_on_s3_via_mlflow_run_ids(
    exp, training_checkpoint, s3_server, mlflow_server, tmp_path
):
    storage = Storage()
    base = f"s3://{s3_server.bucket}/ckpt-test/{tmp_path.name}"
    storage.upload_dir(training_checkpoint, f"{base}/step_00000001")
    torch.manual_seed(1)
    exported = build_unet(exp.model)
    exported.save_pretrained(tmp_path / "export")
    storage.upload_dir(tmp_path / "export", f"{base}/export")

    _, ckpt_run = start_run(
        mlflow_server.uri, "ckpt-test", "train-a", tags={TAG_CHECKPOINT: f"{base}/step_00000001"}
    )
    _, export_run = start_run(
        mlflow_server.uri,
        "ckpt-test",
        "train-b",
        tags={TAG_CHECKPOINT: f"{base}/step_00000001", TAG_EXPORT: f"{base}/export"},
    )
    _, bare_run = start_run(mlflow_server.uri, "ckpt-test", "no-checkpoint")

    a = resolve_checkpoint(ckpt_run, storage, mlflow_server.uri)
    assert (a.kind, a.run_id, a.step) == ("training", ckpt_run, 1)
    _assert_weights(
        load_trained_unet(exp.model, a, storage),
        torch.load(training_checkpoint / "ref.pt", weights_only=True),
    )

    b = resolve_checkpoint(f"runs:/{export_run}", storage, mlflow_server.uri)
    assert (b.kind, b.uri, b.step) == (
        "export",
        f"{base}/export",
        1,
    )  # the export's step: the run's checkpoint
    _assert_weights(load_trained_unet(exp.model, b, storage), exported.state_dict())

    with pytest.raises(UserError, match="neither a asva.export_uri nor a asva.checkpoint_uri tag"):
        resolve_checkpoint(bare_run, storage, mlflow_server.uri)
    with pytest.raises(UserError, match="MLflow run not found"):
        resolve_checkpoint("f" * 32, storage, mlflow_server.uri)
