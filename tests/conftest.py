"""Shared fixtures: real services on loopback (moto S3 server, mlflow server, Ray), started once per session.

Environment defaults are set at import time, before anything imports ray or deepspeed (see README,
"Known gotchas"): token auth off for the loopback-only test cluster, DeepSpeed on the CPU accelerator,
fast Train health checks.
"""

from __future__ import annotations

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import pytest  # noqa: E402

from asva_platform.stack import (  # noqa: E402
    MlflowService,
    S3Service,
    restored_env,
    start_mlflow_server,
    start_s3_server,
)

TEST_BUCKET = "asva-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Service:
    """A real moto S3 server on 127.0.0.1 with bucket ``asva-test``; sets AWS_* env for this process."""
    service = start_s3_server(bucket=TEST_BUCKET, log_dir=tmp_path_factory.mktemp("s3"))
    with restored_env(service.env):
        os.environ.update(service.env)
        yield service
        service.stop()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory) -> MlflowService:
    """A real ``mlflow server`` (sqlite backend, artifacts proxied to the S3 server); sets MLFLOW_TRACKING_URI."""
    workdir = tmp_path_factory.mktemp("mlflow")
    service = start_mlflow_server(workdir, artifacts_uri=f"s3://{TEST_BUCKET}/mlartifacts", s3=s3_server)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = service.uri
    yield service
    service.stop()
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A fresh local Ray (never attaches to another cluster) whose workers see the S3 env; 4 logical CPUs
    because Ray Data feeding Ray Train deadlocks below that."""
    import ray

    from asva_platform.cluster import worker_env

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        runtime_env={"env_vars": worker_env()},
        log_to_driver=True,
    )
    yield ray
    ray.shutdown()
