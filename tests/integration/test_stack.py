"""`asva stack up` starts real services that answer; a second `up` finds them; `down` leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest
import requests

from asva_platform.dev import stack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def asva(args, env):
    return subprocess.run([sys.executable, "-m", "asva_platform.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=240)


def test_stack_up_status_down(tmp_path):
    state = tmp_path / "state"
    env = dict(os.environ)
    env.update({
        "ASVA_STATE_DIR": str(state),
        "ASVA_S3_PORT": str(stack.free_port()),
        "ASVA_MLFLOW_PORT": str(stack.free_port()),
        "ASVA_RAY_PORT": str(stack.free_port()),
        "ASVA_DASHBOARD_PORT": str(stack.free_port()),
        "ASVA_RAY_NUM_CPUS": "2",
    })
    env.pop("RAY_ADDRESS", None)
    settings = stack.StackSettings.from_env(str(state), env)
    try:
        up = asva(["stack", "up"], env)
        assert up.returncode == 0, up.stderr + up.stdout
        assert up.stdout.count("started") == 3

        # S3: the project's bucket exists and objects round-trip.
        s3 = boto3.client("s3", endpoint_url=settings.s3_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        assert "asva" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        # MLflow: REST API answers, backed by sqlite in the state dir.
        assert requests.get(f"{settings.mlflow_url}/health", timeout=5).text.strip() == "OK"
        r = requests.post(f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search",
                          json={"max_results": 10}, timeout=30)  # the first call is slow on a busy machine
        assert r.status_code == 200 and "experiments" in r.json()
        assert (state / "mlflow" / "mlflow.db").exists()
        # Ray: `ray status` sees the head (its first resource report can take a few seconds after start-up)
        deadline = time.time() + 60
        while True:
            ray_status = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address",
                                         f"127.0.0.1:{settings.ray_port}"], capture_output=True, text=True,
                                        env=stack.ray_env() | {"RAY_AUTH_MODE": "disabled"}, timeout=60)
            assert ray_status.returncode == 0, ray_status.stderr
            if "CPU" in ray_status.stdout or time.time() > deadline:
                break
            time.sleep(2)
        assert "CPU" in ray_status.stdout, ray_status.stdout

        # Idempotent: a second up finds the running services and starts nothing.
        again = asva(["stack", "up"], env)
        assert again.returncode == 0 and again.stdout.count("running") == 3 and "started" not in again.stdout
        st = asva(["stack", "status"], env)
        assert st.returncode == 0 and st.stdout.count(" up") == 3

        pids = [rec["pid"] for rec in stack._load_state(settings).values() if rec.get("pid")]
        ray_pids = [p.pid for p in stack.ray_processes(stack.ray_temp_dir(state))]
        assert len(pids) == 2 and ray_pids
    finally:
        down = asva(["stack", "down"], env)
    assert down.returncode == 0, down.stderr
    leftovers = [p for p in [*pids, *ray_pids] if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert leftovers == []
    assert stack.ray_processes(stack.ray_temp_dir(state)) == []
    st = asva(["stack", "status"], env)
    assert st.returncode == 1 and st.stdout.count("down") == 3
