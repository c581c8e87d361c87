"""`asva stack up` starts real services that answer; a second `up` finds them; every one of their listening sockets
is on 127.0.0.1; they refuse whoever lacks the stack's S3 key or Ray token; a restart keeps every object and
artifact; `down` leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from mlflow.tracking import MlflowClient

from asva_platform.dev.s3_server import load_or_create_key
from asva_platform.dev.services import HOST, with_env
from tests import leftovers
from tests.stack_helpers import asva, mlflow_artifacts, settings_of, stack_env, stack_objects

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def s3_client(url: str, access_key: str, secret_key: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}),
    )


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """Every listening TCP socket of these processes: (pid, address, port)."""
    return sorted(
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    )


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def test_stack_up_status_down(tmp_path):
    state = tmp_path / "state"
    env = stack_env(state)
    marker = env[leftovers.SESSION_ENV]
    settings = settings_of(env)
    assert leftovers.session_processes(marker) == []
    try:
        up = asva(["stack", "up", "--nodes", "2"], env)
        assert up.returncode == 0, up.stderr + up.stdout
        assert up.stdout.count("started") == 3
        client = with_env(env, settings.client_env())

        # S3: the project's bucket exists and objects round-trip with the stack's own key, from its 0600 file
        creds = state / "s3" / "credentials"
        assert (
            creds.stat().st_mode & 0o077 == 0 and (state / "ray" / "auth_token").stat().st_mode & 0o077 == 0
        )
        key = load_or_create_key(state / "s3")
        s3 = s3_client(settings.s3_url, key.access_key, key.secret_key)
        assert "asva" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        s3.put_object(Bucket="asva", Key="probe", Body=b"kept")
        # ... and with nothing else: another key, the right key with another secret, no signature at all
        for access, secret in (("testing", "testing"), (key.access_key, "not-the-secret")):
            with pytest.raises(ClientError) as refused:
                s3_client(settings.s3_url, access, secret).get_object(Bucket="asva", Key="probe")
            assert refused.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
        assert requests.get(f"{settings.s3_url}/asva/probe", timeout=5).status_code == 403

        # MLflow: REST API answers, backed by sqlite in the state dir.
        assert requests.get(f"{settings.mlflow_url}/health", timeout=5).text.strip() == "OK"
        r = requests.post(
            f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search", json={"max_results": 10}, timeout=30
        )  # the first call is slow on a busy machine
        assert r.status_code == 200 and "experiments" in r.json()
        assert (state / "mlflow" / "mlflow.db").exists()

        # Ray: `ray status` with the stack's environment sees both nodes (the first report takes a few seconds)
        deadline = time.time() + 60
        while True:
            ray_status = subprocess.run(
                [RAY, "status"], capture_output=True, text=True, env=client, timeout=60
            )
            assert ray_status.returncode == 0, ray_status.stderr
            if "asva_node_1" in ray_status.stdout or time.time() > deadline:
                break
            time.sleep(2)
        assert "0.0/1.0 asva_node_0" in ray_status.stdout and "0.0/1.0 asva_node_1" in ray_status.stdout, (
            ray_status.stdout
        )
        # ... and refuses a client without the token (the job server and the GCS alike)
        assert requests.get(f"{settings.dashboard_url}/api/jobs/", timeout=10).status_code == 401
        anonymous = with_env(
            client, {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": "", "HOME": str(tmp_path)}
        )
        refused = subprocess.run([RAY, "status"], capture_output=True, text=True, env=anonymous, timeout=120)
        assert refused.returncode != 0 and "AuthenticationError" in refused.stderr, refused.stderr[-2000:]

        # Every socket the stack listens on is bound to loopback: reachable from this machine only
        procs = {p.pid for p in leftovers.session_processes(marker)}
        sockets = listening(procs)
        assert [s for s in sockets if not is_loopback(s[1])] == []
        listeners = [psutil.Process(pid).name() for pid in {pid for pid, _, _ in sockets}]
        for name, count in (
            ("weed", 1),
            ("gcs_server", 1),
            ("raylet", 2),
        ):  # the check saw every kind of server
            assert listeners.count(name) == count, listeners
        assert {settings.s3_port, settings.mlflow_port, settings.ray_port, settings.dashboard_port} <= {
            port for _, _, port in sockets
        }

        # Idempotent: a second up finds the running services and starts nothing.
        again = asva(["stack", "up"], env)
        assert again.returncode == 0 and again.stdout.count("running") == 3 and "started" not in again.stdout
        st = asva(["stack", "status"], env)
        assert st.returncode == 0 and st.stdout.count(" up") == 3

        # A restart keeps everything, as at the end of a day: every object byte for byte, every MLflow artifact
        # served again (the walkthrough's check, which CI leaves to `make test-all`)
        tracking = MlflowClient(settings.mlflow_url)
        run = tracking.create_run(tracking.create_experiment("kept"))
        tracking.log_text(run.info.run_id, "kept across a restart", "notes/kept.txt")
        objects, artifacts = stack_objects(settings), mlflow_artifacts(settings, tmp_path / "before")
        assert f"s3://{settings.bucket}/probe" in objects and (run.info.run_id, "notes/kept.txt") in artifacts
        down = asva(["stack", "down"], env)
        assert down.returncode == 0, down.stderr
        up = asva(["stack", "up"], env)
        assert up.returncode == 0 and up.stdout.count("started") == 3, up.stdout + up.stderr
        assert stack_objects(settings) == objects
        assert mlflow_artifacts(settings, tmp_path / "after") == artifacts
    finally:
        down = asva(["stack", "down"], env)
    assert down.returncode == 0, down.stderr
    # The process tree after `down` is the one before `up`: nothing the stack started is left, the Ray Client
    # server and the worker node's processes included
    assert [leftovers.describe(p) for p in leftovers.session_processes(marker)] == []
    st = asva(["stack", "status"], env)
    assert st.returncode == 1 and st.stdout.count("down") == 3


def test_a_port_held_by_something_else_is_one_line(tmp_path):
    """`up` on a port some other program holds names the port instead of waiting for a health check forever."""
    import socket

    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = stack_env(tmp_path / "state", ASVA_S3_PORT=str(port))
        up = asva(["stack", "up"], env, timeout=120)
    assert up.returncode == 2, up.stdout + up.stderr
    assert (
        up.stderr.strip().splitlines()[-1]
        == f"error: port {port} is taken by something that is not an S3 server"
    )
    assert leftovers.session_processes(env[leftovers.SESSION_ENV]) == []
