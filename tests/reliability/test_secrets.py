"""Case 8, secrets: with AWS credentials in the environment, the secret key appears nowhere the platform writes.

This module's OWN S3 server generates its key; the key is then put in the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, as a cluster's nodes may get it from a Kubernetes Secret)
before the MLflow server starts, so every client (the job, Ray workers, the MLflow server's artifact proxy)
really signs with it, and the server refuses any other. Then the real training job runs as a subprocess (tiny model, 2 steps, validation video, export) and the
suite scans: the job's stdout/stderr, every file of its Ray session (driver and worker logs), every object
in the bucket (checkpoints, exports, MLflow artifacts, the cache), the MLflow run's params and tags, the
MLflow server's own files (sqlite store, logs) and the printed config (``asva config show``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asva_platform.dev.s3_server import CREDENTIALS_FILE, IDENTITIES_FILE, load_or_create_key, start_s3_server
from asva_platform.dev.services import apply_env, restored_env
from asva_platform.dev.stack import start_mlflow_server
from tests.reliability.helpers import TINY, job_env, tiny_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "secrets-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Own S3 + MLflow servers, every client with the S3 key in its environment (not the credentials file)."""
    work = tmp_path_factory.mktemp("secrets")
    s3 = start_s3_server(work / "s3", bucket=BUCKET)
    key = load_or_create_key(work / "s3")
    in_env = {
        **s3.env,
        "AWS_SHARED_CREDENTIALS_FILE": "",
        "AWS_PROFILE": "",
        "AWS_ACCESS_KEY_ID": key.access_key,
        "AWS_SECRET_ACCESS_KEY": key.secret_key,
    }
    with restored_env([*in_env, "MLFLOW_TRACKING_URI"]):
        apply_env(os.environ, in_env)
        mlflow = start_mlflow_server(work / "mlflow", artifacts_uri=f"s3://{BUCKET}/mlartifacts", s3=s3)
        apply_env(os.environ, in_env)
        try:
            yield work, s3, mlflow, key.secret_key
        finally:
            mlflow.stop()
            s3.stop()


def scan_text(where: str, data: bytes | str, found: list[str], secret: str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    if secret.encode() in raw:
        found.append(where)


def test_secret_key_appears_nowhere(stack):
    work, s3, mlflow, secret = stack
    overrides, storage = tiny_cache(work, f"s3://{BUCKET}/root", mlflow.uri)
    env, ray_tmp = job_env(mlflow.uri)
    job_args = [
        *overrides,
        "name=secret-run",
        "train.max_steps=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "train.validate_every=2",
        "train.val_windows=2",
        "train.num_samples=1",
        "generate.num_inference_steps=2",
        "train.batch_size_per_worker=1",
        "train.ema=true",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--config", TINY, "--json", *job_args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shown = subprocess.run(
        [sys.executable, "-m", "asva_platform.cli", "config", "show", "--config", TINY, *job_args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert shown.returncode == 0 and "train:" in shown.stdout, shown.stderr[-2000:]

    found: list[str] = []
    scanned = {"ray files": 0, "objects": 0, "checkpoint objects": 0, "server files": 0}
    scan_text("job stdout/stderr", proc.stdout + proc.stderr, found, secret)
    scan_text("asva config show", shown.stdout + shown.stderr, found, secret)
    for f in ray_tmp.rglob("*"):
        if f.is_file() and not f.is_symlink():
            scanned["ray files"] += 1
            scan_text(f"ray session file {f}", f.read_bytes(), found, secret)
    objects = storage.list(f"s3://{BUCKET}/")
    for uri in objects:
        scanned["objects"] += 1
        scanned["checkpoint objects"] += "/runs/secret-run/step_" in uri
        scan_text(f"object {uri}", storage.read_bytes(uri), found, secret)
    key_store = {
        work / "s3" / CREDENTIALS_FILE,
        work / "s3" / IDENTITIES_FILE,
    }  # where the key is meant to be
    for f in work.rglob("*"):  # the MLflow server's sqlite store, the S3 server's data and both servers' logs
        if f in key_store or not f.is_file():
            continue
        if f.parent.name in ("mlflow", "s3") or f.suffix in (".db", ".log", ".dat"):
            scanned["server files"] += 1
            scan_text(f"server file {f}", f.read_bytes(), found, secret)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.uri)
    run = client.get_run(result["run_id"])
    scan_text("MLflow params", json.dumps(run.data.params), found, secret)
    scan_text("MLflow tags", json.dumps(run.data.tags), found, secret)
    assert len(run.data.params) > 100 and client.list_artifacts(result["run_id"])

    assert not found, f"secret key found in: {found}"
    # the scan really covered the places it claims to
    assert scanned["ray files"] > 5 and scanned["checkpoint objects"] > 3 and scanned["server files"] >= 1, (
        scanned
    )
    assert any("/mlartifacts/" in o for o in objects), "no MLflow artifact reached the bucket"
    shutil.rmtree(ray_tmp, ignore_errors=True)
