"""The training job end to end on real parts: a latent cache of the synthetic AVSync15 on the moto S3 server,
a real local Ray (2 CPU workers, gloo), real DeepSpeed, a real MLflow server. Tiny model, 16x16 frames.

Checks the issue's "done when": ZeRO-2 and ZeRO-3 lower the held-out loss; the S3 checkpoint holds both
ranks' shards and DeepSpeed's zero_to_fp32 consolidates it (= our export); a re-run with the same name
resumes at the saved step with the saved weights (checksum) in the same MLflow run; the MLflow run holds
params, metrics, tags and a sample video; no MLflow metric has a step twice. A worker killed mid-training:
tests/reliability/test_train_worker_killed.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

from asva_platform.artifacts.checkpoint import STATE_FILE
from asva_platform.errors import run_guarded
from asva_platform.inference.checkpoints import local_checkpoint
from asva_platform.planning import memory
from asva_platform.training.job import run as run_training
from tests.output import own_lines
from tests.train_helpers import (
    FAST,
    TINY,
    assert_no_duplicate_steps,
    config,
    history,
    mlflow_client,
    trainer_state,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zero2_run(train_inputs, ray_cluster):
    cfg = config(
        train_inputs,
        "name=zero2",
        "train.zero_stage=2",
        "train.max_steps=8",
        "train.checkpoint_every=8",
        "train.validate_every=8",
        "train.ema=true",
        "train.ema_decay=0.5",
    )
    return cfg, run_training(cfg)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_stage_lowers_loss_and_checkpoints_both_ranks_to_s3(
    stage, train_inputs, ray_cluster, mlflow_server, tmp_path, request
):
    if stage == 2:
        cfg, result = request.getfixturevalue("zero2_run")
    else:
        # ZeRO-3 also exercises bf16 (buffer dtype) and gradient checkpointing over partitioned weights
        cfg = config(
            train_inputs,
            "name=zero3",
            "train.zero_stage=3",
            "train.max_steps=8",
            "train.checkpoint_every=8",
            "train.validate_every=8",
            "train.precision=bf16",
            "model.gradient_checkpointing=true",
        )
        result = run_training(cfg)
    _, _, storage = train_inputs
    assert result.final_step == 8
    # what each rank held at its optimizer step, reported with every window, is what `asva plan` counts
    want = memory.model_states(memory.unet_inventory(cfg.model), stage, cfg.train.precision, 2)
    held = {k: result.metrics[f"rank_{k}_bytes"] for k in ("params", "grads", "optimizer")}
    assert held == {"params": want.params, "grads": want.grads, "optimizer": want.optimizer}
    assert result.to_json()["metrics"]["rank_peak_rss_gb"] > 0.1
    assert result.checkpoint_uri == f"{cfg.storage.runs_root}/zero{stage}/step_00000008"
    client = mlflow_client(mlflow_server)
    val = dict(history(client, result.run_id, "val_loss"))
    assert set(val) == {0, 8}
    assert val[8] < val[0] * 0.97, f"held-out loss did not drop: {val}"

    names = {Path(uri).name for uri in storage.list(result.checkpoint_uri)}
    for rank in (0, 1):  # (bf16_)zero_pp_rank_<r>_...: one optimizer shard per rank, written by that rank
        assert any(n.endswith(f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt") for n in names), names
        if stage == 3:
            assert f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in names
    assert {"latest", STATE_FILE, "zero_to_fp32.py"} <= names
    state = trainer_state(storage, result.checkpoint_uri)
    assert (state["step"], state["world_size"], state["zero_stage"]) == (8, 2, stage)

    # DeepSpeed's own consolidation script works on our checkpoint and agrees with our export
    local = local_checkpoint(storage, result.checkpoint_uri, tmp_path)
    out = tmp_path / "fp32"
    proc = subprocess.run(
        [sys.executable, str(local / "zero_to_fp32.py"), str(local), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    consolidated = {}
    for f in sorted(out.glob("*.safetensors")) or sorted(out.glob("*.bin")):
        consolidated.update(
            load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, weights_only=True)
        )
    storage.download_dir(result.export_uri, tmp_path / "export")
    from asva_model.models.unet import AudioUNet3D

    exported = AudioUNet3D.from_pretrained(tmp_path / "export").state_dict()
    assert set(consolidated) == set(exported)
    # exact on purpose: both are copies of the same saved weights (DeepSpeed's script and ours), no arithmetic
    assert all(torch.equal(consolidated[k].float(), exported[k].float()) for k in exported)
    trained = [k for k in exported if "_temp" in k or "_audio" in k]
    assert trained and any(
        exported[k].abs().sum() > 0 for k in trained if "conv_temp" in k
    )  # zero-init, trained

    if stage == 2:  # EMA (decay 0.5) was exported separately and differs from the raw weights
        storage.download_dir(result.export_ema_uri, tmp_path / "export_ema")
        ema = AudioUNet3D.from_pretrained(tmp_path / "export_ema").state_dict()
        assert any(not torch.equal(ema[k], exported[k]) for k in trained)
        assert all(torch.equal(ema[k], exported[k]) for k in exported if k not in trained)


def test_mlflow_run_has_params_metrics_tags_and_sample_video(
    train_inputs, zero2_run, mlflow_server, tmp_path
):
    cfg, result = zero2_run
    _, cache_id, _ = train_inputs
    client = mlflow_client(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.zero_stage"] == "2" and params["model.unet.block_out_channels"] == "[32, 64]"
    assert params["train.cache"] == cache_id and len(params) > 100
    tags = run.data.tags
    assert tags["asva.cache_id"] == cache_id
    assert tags["asva.deepspeed_stage"] == "2" and tags["asva.world_size"] == "2"
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["asva.checkpoint_uri"] == result.checkpoint_uri
    # the printed link opens this run; its experiment opens on the runs table, and both say what they hold
    assert result.mlflow_url == (
        f"{mlflow_server.uri}/#/experiments/{run.info.experiment_id}/runs/{result.run_id}"
        "?workflowType=machine_learning"
    )
    assert result.mlflow_url in result.summary_line()
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] and f"`{cache_id}`" in tags["mlflow.note.content"]
    metrics = run.data.metrics
    for key in (
        "loss",
        "lr",
        "grad_norm",
        "samples_per_s",
        "frames_per_s",
        "data_wait_frac",
        "step_time_s",
        "rss_gb",
        "val_loss",
        "val_samples",
        "val_loss_true",
        "val_loss_other_audio",
        "val_loss_null_audio",
        "val_loss_gap_t",
        "val_audio_win_rate",
    ):
        assert key in metrics, key
    # the audio-gap losses are the held-out loss under three audio conditions at the same noise: all finite,
    # and the own-audio one is the plain validation loss's condition (averaged over more noise draws)
    assert all(
        math.isfinite(metrics[k]) for k in ("val_loss_true", "val_loss_other_audio", "val_loss_null_audio")
    )
    assert 0.0 <= metrics["val_audio_win_rate"] <= 1.0
    assert [s for s, _ in history(client, result.run_id, "loss")] == [2, 4, 6, 8]
    # what training waited for at its one checkpoint (async upload by default: the local save alone)
    assert [s for s, v in history(client, result.run_id, "checkpoint_stall_s") if v > 0] == [8]
    assert_no_duplicate_steps(client, result.run_id)

    # ...and a first/middle/last frame strip per sample at the step, for the run page's image step slider
    images = [a.path for a in client.list_artifacts(result.run_id, "images")]
    assert any("+step+8+" in p and p.endswith(".png") and p.startswith("images/samples~") for p in images), (
        images
    )
    videos = [a.path for a in client.list_artifacts(result.run_id, "samples/step_00000008")]
    assert len(videos) == 1 and videos[0].endswith(".mp4")
    local = client.download_artifacts(result.run_id, videos[0], str(tmp_path))
    with av.open(local) as container:
        assert container.streams.video and container.streams.audio
        frames = list(container.decode(video=0))
    assert len(frames) == cfg.sampling.num_frames


def test_rerun_with_same_name_resumes_at_saved_step_with_same_weights(
    train_inputs, ray_cluster, mlflow_server, capsys
):
    from jobs.train import main

    _, _, storage = train_inputs
    first = run_training(
        config(
            train_inputs,
            "name=resume",
            "train.max_steps=4",
            "train.checkpoint_every=4",
            "train.validate_every=0",
            "train.export=false",
            "train.milestone_every=4",
        )
    )
    saved = trainer_state(storage, first.checkpoint_uri)
    assert saved["step"] == 4 and saved["resumes"] == []
    milestone = {
        Path(u).name for u in storage.list(first.checkpoint_uri.replace("/step_", "/milestones/step_"))
    }
    assert {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
        STATE_FILE,
    } <= milestone  # kept outside Ray's keep-last-K rotation

    overrides, _, _ = train_inputs
    rc = run_guarded(
        main,
        [
            "--config",
            TINY,
            "--json",
            *overrides,
            *FAST,
            "name=resume",
            "train.max_steps=6",
            "train.checkpoint_every=2",
            "train.validate_every=0",
            "train.export=false",
        ],
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert set(out) >= {"run_id", "checkpoint_uri", "final_step", "final_loss", "samples_per_s"}
    assert out["run_id"] == first.run_id  # the same MLflow run
    assert out["final_step"] == 6 and out["checkpoint_uri"].endswith("/resume/step_00000006")
    assert out["final_loss"] > 0 and out["samples_per_s"] > 0
    resumed = trainer_state(storage, out["checkpoint_uri"])["resumes"]
    assert [r["step"] for r in resumed] == [4]
    assert resumed[0]["checksum"] == saved["param_checksum"]

    client = mlflow_client(mlflow_server)
    assert [s for s, _ in history(client, first.run_id, "loss")] == [2, 4, 6]
    assert resumed[0]["mlflow_run_id"] == first.run_id

    assert client.get_run(first.run_id).data.tags["asva.resumes"] == "1"
    assert "train.max_steps" in client.get_run(first.run_id).data.tags["asva.resume_1.changed"]

    # another worker count: the ZeRO-2 shards of 2 ranks reshard to 1 through a universal checkpoint, and the
    # global batch (2 clips x 2 workers) is kept by doubling the gradient accumulation
    rc = run_guarded(
        main,
        [
            "--config",
            TINY,
            "--json",
            *overrides,
            *FAST,
            "name=resume",
            "train.max_steps=8",
            "train.checkpoint_every=2",
            "train.validate_every=0",
            "train.export=false",
            "train.num_workers=1",
        ],
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    assert (
        "resharding" in captured.out
        and "gradient accumulation 1 -> 2 keeps the global batch at 4" in captured.out
    )
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["final_step"] == 8
    state = trainer_state(storage, out["checkpoint_uri"])
    assert (state["world_size"], state["global_batch_size"], state["samples_seen"]) == (1, 4, 32)
    assert [(r["step"], r["world_size"]) for r in state["resumes"]] == [(4, [2, 2]), (6, [2, 1])]
    assert [s for s, _ in history(client, first.run_id, "loss")] == [2, 4, 6, 8]  # each step once
    assert_no_duplicate_steps(client, first.run_id)
    assert client.get_run(first.run_id).data.tags["asva.world_size"] == "1"
    # a worker count that no whole accumulation fits is one line before any resources are taken
    rc = run_guarded(
        main, ["--config", TINY, *overrides, "name=resume", "train.max_steps=10", "train.num_workers=3"]
    )
    err = own_lines(capsys.readouterr().err)[-1]
    assert (
        rc == 2 and err.startswith("error: run ") and "divides no whole number of accumulation steps" in err
    )


def test_online_mode_trains_from_raw_clips(train_inputs, ray_cluster, mlflow_server):
    """No cache: clips are decoded and encoded by the frozen VAE + audio encoder inside the loop."""
    result = run_training(
        config(
            train_inputs,
            "name=online",
            "train.data_mode=online",
            "train.cache=",
            "train.max_steps=2",
            "train.checkpoint_every=2",
            "train.validate_every=0",
            "train.export=false",
        )
    )
    assert result.final_step == 2 and result.final_loss > 0
    tags = mlflow_client(mlflow_server).get_run(result.run_id).data.tags
    assert tags["asva.data_mode"] == "online" and "asva.cache_id" not in tags


def test_bad_input_fails_in_one_line_before_ray(train_inputs):
    overrides, _, _ = train_inputs
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for extra, message in (
        (["train.cache=no-such-cache"], "no complete latent cache"),
        (
            ["tracking.uri=http://127.0.0.1:9", "tracking.required=true"],
            "cannot reach MLflow tracking server",
        ),
        (["train.precision=fp16"], "fp16 (loss scaling) needs GPUs"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.train", "--config", TINY, *overrides, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env=env,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], lines[-3:]
        assert "Started a local Ray instance" not in proc.stderr + proc.stdout
