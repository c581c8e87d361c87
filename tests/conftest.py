"""Shared fixtures: real services on loopback (a SeaweedFS S3 server, an mlflow server, Ray), started once per
session, and the small inputs several tiers share (``train_inputs``, ``sweep_inputs``), built once per session.

The tiers, one folder each (``make test`` runs them all but the ``slow`` marker; CI runs ``make test``):

* ``tests/unit``: no service (no Ray, no S3 or MLflow server, no listening TCP socket; enforced by
  ``tests/service_guard.py``), tiny models, seconds per test. ``make test-fast`` runs this tier alone.
* ``tests/learning``: no service either, but minutes: checks that a tiny model actually learns.
* ``tests/integration``: real Ray, a real S3 server (SeaweedFS, disk-backed, with its own key) and a real
  ``mlflow server``; marked ``integration``.
* ``tests/reliability``: fault injection (killed drivers, workers, jobs and servers, S3 and MLflow outages,
  connection resets, bad inputs). The long ones are also marked ``slow``: ``make test`` leaves them out,
  ``make test-reliability`` runs the whole folder.

Any tier marks ``slow`` a test that repeats at several times its cost a check the default run already makes
(CI's budget is about 30 minutes); ``make test-all`` runs everything.

Environment defaults are set at import time, before anything imports ray or deepspeed (see README,
"Known gotchas"): every Ray of the session (the in-process one, the clusters tests start, the jobs' own)
binds 127.0.0.1 and requires the session's auth token, as the local stack's does; DeepSpeed on the CPU
accelerator; fast Train health checks. Every process the session starts carries ``ASVA_TEST_SESSION``: what
is still running at the end is stopped and reported (:mod:`tests.leftovers`), so ``make test`` leaves no Ray
process behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import pytest  # noqa: E402

from asva_platform.dev.ray_local import use_private_local_ray  # noqa: E402
from asva_platform.dev.s3_server import S3Service, start_s3_server  # noqa: E402
from asva_platform.dev.services import env_applied  # noqa: E402
from asva_platform.dev.stack import MlflowService, start_mlflow_server  # noqa: E402
from tests import leftovers  # noqa: E402

RAY_TOKEN = use_private_local_ray()
"""The session's Ray auth token: every Ray a test starts requires it, every driver and CLI presents it."""
os.environ[leftovers.SESSION_ENV] = leftovers.SESSION_ID

TEST_BUCKET = "asva-test"
REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def pytest_sessionfinish(session, exitstatus):
    """Stop what the session left running (a Ray it started, a server a test forgot); a leftover fails the run."""
    found = leftovers.reap()
    if found:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"leftover processes of this test session, stopped now: {', '.join(found)}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="module", autouse=True)
def torch_threads_per_module():
    """Every test module starts with the session's torch thread count, whatever a module before it set (several
    pin 1 thread for speed and determinism and never reset it): CPU results depend on the thread count, so a
    module's numbers must not depend on which modules ran before it."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Service:
    """A real S3 server (SeaweedFS) on 127.0.0.1 with bucket ``asva-test`` and its own key; sets this process's
    AWS_* env (endpoint, credentials file) for the session."""
    service = start_s3_server(tmp_path_factory.mktemp("s3"), bucket=TEST_BUCKET)
    with env_applied(service.env):
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


# The inputs below import the platform's jobs lazily: collecting the unit tier never loads them.


@pytest.fixture(scope="session")
def train_inputs(s3_server, mlflow_server, tmp_path_factory):
    """Synthetic data + tiny weights locally (2 clips per class, 16x16), their latent cache on S3; returns
    (overrides a training run starts from, cache id, storage). Used by tests/integration/test_train.py and
    the fault-injection tests of training in tests/reliability."""
    from asva_platform.dev.fixtures import tiny_inputs
    from asva_platform.experiment import load_experiment
    from asva_platform.preprocess.job import build_cache, prepare, run_sequential
    from asva_platform.storage import Storage

    work = tmp_path_factory.mktemp("train")
    _, overrides = tiny_inputs(work, clips_per_class=2, max_duration=3.0, image_size=16)
    overrides += [
        f"storage.root=s3://{s3_server.bucket}/train-{work.name}",
        "preprocess.windows_per_clip=1",
        f"tracking.uri={mlflow_server.uri}",
    ]
    cfg = load_experiment(str(TINY), overrides)
    storage = Storage.from_config(cfg.storage)
    prep = prepare(cfg, storage, log=lambda _: None)
    build_cache(prep, run_sequential, log=lambda _: None)
    return overrides + [f"train.cache={prep.cache_id}"], prep.cache_id, storage


@pytest.fixture(scope="session")
def sweep_inputs(s3_server, tmp_path_factory):
    """Tiny weights, a synthetic AVSync15 (train + test lists), its latent cache on S3 and tiny metric
    networks; returns the ``base.*`` overrides every sweep starts from, the storage root and the cache id.
    Used by tests/integration/test_sweep.py and tests/reliability/test_sweep_driver_killed.py."""
    from asva_model.metrics.networks.tiny import save_tiny_metric_networks
    from asva_platform.dev.fixtures import tiny_inputs
    from asva_platform.experiment import load_experiment
    from asva_platform.preprocess.job import build_cache, prepare, run_sequential
    from asva_platform.storage import Storage

    work = tmp_path_factory.mktemp("sweep-inputs")
    _, overrides = tiny_inputs(work, clips_per_class=2, max_duration=4.0, image_size=32)
    root = f"s3://{s3_server.bucket}/sweep-tests-{uuid.uuid4().hex[:8]}"
    cfg = load_experiment(
        TINY,
        [*overrides, f"storage.root={root}", "preprocess.splits=[train]", "preprocess.windows_per_clip=2"],
    )
    prep = prepare(cfg, Storage.from_config(cfg.storage))
    build_cache(prep, run_sequential)
    nets = save_tiny_metric_networks(work / "metric-nets")
    base = [f"base.{o}" for o in overrides] + [
        f"base.storage.root={root}",
        f"base.train.cache={prep.cache_id}",
        "base.eval.metrics.metrics=[sync, fvd]",
        f"base.eval.metrics.i3d_weights={nets.i3d_weights}",
        "base.eval.max_videos=1",
        "base.generate.num_inference_steps=2",
    ]
    return {"overrides": base, "root": root, "cache_id": prep.cache_id}
