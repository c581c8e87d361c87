"""Case 2, driver killed: the training job's driver process is SIGKILLed after its first checkpoint reached S3
(with it goes the local Ray it started: workers, raylet, GCS). Re-running the job with the same run name
resumes from that checkpoint, finishes at the configured step, and logs into the same MLflow run with no
metric step twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from asva_platform.artifacts.checkpoint import STATE_FILE
from asva_platform.dev.services import kill_tree
from asva_platform.storage import join
from tests.reliability.helpers import TINY, job_env, tiny_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = 12


def test_killed_driver_resumes_from_s3_checkpoint_on_resubmit(s3_server, mlflow_server, tmp_path):
    root = f"s3://{s3_server.bucket}/driver-kill-{tmp_path.name}"
    overrides, storage = tiny_cache(tmp_path, root, mlflow_server.uri)
    env, ray_tmp = job_env(mlflow_server.uri)
    cmd = [
        sys.executable,
        "-m",
        "jobs.train",
        "--config",
        TINY,
        "--json",
        *overrides,
        "name=driver-kill",
        f"train.max_steps={STEPS}",
        "train.checkpoint_every=4",
        "train.log_every=1",
        "train.validate_every=0",
        "train.export=false",
        "train.batch_size_per_worker=1",
    ]
    snapshot = join(root, "runs", "driver-kill", "checkpoint_manager_snapshot.json")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    family: list[psutil.Process] = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            try:
                if "step_00000004" in storage.read_bytes(snapshot).decode():
                    break
            except Exception:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, "the job ended before it could be killed"
        family = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_tree(proc.pid)
        for child in family:
            kill_tree(child.pid)  # the local Ray the dead driver had started
    shutil.rmtree(ray_tmp, ignore_errors=True)

    env, ray_tmp = job_env(mlflow_server.uri)
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["final_step"] == STEPS
    state = storage.read_json(join(result["checkpoint_uri"], STATE_FILE))
    resumed_from = [r["step"] for r in state["resumes"]]
    assert len(resumed_from) == 1 and resumed_from[0] >= 4, resumed_from

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.mlflow.runName = 'driver-kill'",
    )
    assert [r.info.run_id for r in runs] == [result["run_id"]], "the re-run opened a second MLflow run"
    steps = [m.step for m in client.get_metric_history(result["run_id"], "loss")]
    assert sorted(steps) == list(range(1, STEPS + 1)), steps
