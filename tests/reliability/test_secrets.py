"""Case 8, secrets: with AWS credentials in the environment, the secret key appears nowhere the platform writes.

A distinctive fake secret (moto accepts any credentials) is set before this module's OWN S3 and MLflow
servers start, so every client (the job, Ray workers, the MLflow server's artifact proxy) really signs with
it. Then the real training job runs as a subprocess (tiny model, 2 steps, validation video, export) and the
suite scans: the job's stdout/stderr, every file of its Ray session (driver and worker logs), every object
in the bucket (checkpoints, exports, MLflow artifacts, the cache), the MLflow run's params and tags, the
MLflow server's own files (sqlite store, logs) and the printed config (``asva config show``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asva_platform.dev.stack import restored_env, start_mlflow_server, start_s3_server
from tests.reliability.helpers import TINY, job_env, tiny_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SECRET = f"asvaSeCrEt{secrets.token_hex(12)}"
ACCESS_KEY = "AKIAASVARELIABILITY1"
BUCKET = "secrets-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Own S3 + MLflow servers started with the fake credentials in the environment."""
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION",
            "MLFLOW_TRACKING_URI")
    with restored_env(keys):
        os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
        work = tmp_path_factory.mktemp("secrets")
        s3 = start_s3_server(bucket=BUCKET, log_dir=work / "s3")
        os.environ.update(s3.env)
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
        mlflow = start_mlflow_server(work / "mlflow", artifacts_uri=f"s3://{BUCKET}/mlartifacts", s3=s3)
        try:
            yield work, s3, mlflow
        finally:
            mlflow.stop()
            s3.stop()


def scan_text(where: str, data: bytes | str, found: list[str]) -> None:
    raw = data.encode() if isinstance(data, str) else data
    if SECRET.encode() in raw:
        found.append(where)


def test_secret_key_appears_nowhere(stack):
    work, s3, mlflow = stack
    overrides, storage = tiny_cache(work, f"s3://{BUCKET}/root", mlflow.uri)
    env, ray_tmp = job_env(mlflow.uri)
    job_args = [*overrides, "name=secret-run", "train.max_steps=2",
                "train.checkpoint_every=2", "train.log_every=1", "train.validate_every=2", "train.val_windows=2",
                "train.num_samples=1", "eval.num_inference_steps=2", "train.batch_size_per_worker=1",
                "train.ema=true"]
    proc = subprocess.run([sys.executable, "-m", "jobs.train", "--config", TINY, "--json", *job_args],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shown = subprocess.run([sys.executable, "-m", "asva_platform.cli", "config", "show", "--config", TINY, *job_args],
                           capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert shown.returncode == 0 and "train:" in shown.stdout, shown.stderr[-2000:]

    found: list[str] = []
    scanned = {"ray files": 0, "objects": 0, "checkpoint objects": 0, "server files": 0}
    scan_text("job stdout/stderr", proc.stdout + proc.stderr, found)
    scan_text("asva config show", shown.stdout + shown.stderr, found)
    for f in ray_tmp.rglob("*"):
        if f.is_file() and not f.is_symlink():
            scanned["ray files"] += 1
            scan_text(f"ray session file {f}", f.read_bytes(), found)
    objects = storage.list(f"s3://{BUCKET}/")
    for uri in objects:
        scanned["objects"] += 1
        scanned["checkpoint objects"] += "/runs/secret-run/step_" in uri
        scan_text(f"object {uri}", storage.read_bytes(uri), found)
    for f in work.rglob("*"):  # the MLflow server's sqlite store and both servers' logs
        if f.is_file() and f.parent.name in ("mlflow", "s3") or f.suffix in (".db", ".log"):
            scanned["server files"] += 1
            scan_text(f"server file {f}", f.read_bytes(), found)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.uri)
    run = client.get_run(result["run_id"])
    scan_text("MLflow params", json.dumps(run.data.params), found)
    scan_text("MLflow tags", json.dumps(run.data.tags), found)
    assert len(run.data.params) > 100 and client.list_artifacts(result["run_id"])

    assert not found, f"secret key found in: {found}"
    # the scan really covered the places it claims to
    assert scanned["ray files"] > 5 and scanned["checkpoint objects"] > 3 and scanned["server files"] >= 1, scanned
    assert any("/mlartifacts/" in o for o in objects), "no MLflow artifact reached the bucket"
    shutil.rmtree(ray_tmp, ignore_errors=True)
