"""Case: a training worker SIGKILLed mid-run (as an OOM kill or a lost node would) after the first checkpoint
reached S3. Ray Train's FailureConfig replaces the worker group, the run resumes from that checkpoint and ends
at the configured step, and every step is in MLflow once although some were trained twice.

Real parts, as in tests/integration/test_train.py (whose inputs it shares): a latent cache on the moto S3
server, the session's local Ray (2 CPU workers, gloo), real DeepSpeed, a real MLflow server."""

from __future__ import annotations

import threading
import time

import pytest

from asva_platform.storage import join
from asva_platform.training.job import run as run_training
from tests.train_helpers import assert_no_duplicate_steps, config, history, mlflow_client, trainer_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~2 min: `make test-reliability` runs it


def our_train_workers():
    """RayTrainWorker processes of THIS test session's Ray (never another developer's)."""
    import psutil
    import ray

    raylet = ray._private.worker.global_worker.node.all_processes["raylet"][0].process.pid
    return [
        p
        for p in psutil.Process(raylet).children(recursive=True)
        if "RayTrainWorker" in " ".join(p.cmdline())
    ]


def test_killed_worker_recovers_via_failure_config(train_inputs, ray_cluster, mlflow_server):
    cfg = config(
        train_inputs,
        "name=kill",
        "train.max_steps=12",
        "train.checkpoint_every=4",
        "train.log_every=1",
        "train.validate_every=0",
        "train.export=false",
        "train.max_failures=2",
    )
    _, _, storage = train_inputs
    run_dir = join(cfg.storage.runs_root, "kill")
    killed: list[int] = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 240
        snapshot = join(run_dir, "checkpoint_manager_snapshot.json")
        while time.time() < deadline and not killed:
            try:
                if "step_00000004" in storage.read_bytes(snapshot).decode():
                    workers = our_train_workers()
                    if workers:
                        workers[-1].kill()  # SIGKILL, as an OOM kill or a lost node would
                        killed.append(workers[-1].pid)
                        return
            except Exception:
                pass
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = run_training(cfg)
    killer.join(timeout=5)
    assert killed, "the test never killed a worker (training finished before the first checkpoint was seen?)"
    assert result.final_step == 12
    state = trainer_state(storage, result.checkpoint_uri)
    assert state["step"] == 12
    assert state["resumes"] and state["resumes"][0]["step"] >= 4
    client = mlflow_client(mlflow_server)
    steps = [s for s, _ in history(client, result.run_id, "loss")]
    assert steps == list(range(1, 13))  # every step once, although some were trained twice
    assert_no_duplicate_steps(client, result.run_id)
