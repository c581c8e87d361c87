"""Ray cluster helpers: joining/starting Ray with the environment every worker needs.

Workers must see the S3 endpoint, region and MLflow URI (checkpoints and metrics go there), but never
credentials through the runtime env (it is visible in the dashboard and job listings): on a cluster,
credentials come from each node's own AWS chain (instance role, IRSA, a Kubernetes Secret); on the local
stack, workers inherit them from the process that started Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asva_platform.errors import UserError


@dataclass
class ClusterConfig:
    address: str = ""
    """Ray cluster to join (`auto`, `ray://...`); empty = $RAY_ADDRESS, else start a local Ray."""
    num_cpus: int = 0
    """Logical CPUs for a local Ray (0 = Ray's default). Data->Train streaming needs >= 4 (see README)."""


# Forwarded to Ray workers when set: endpoints and switches, never secrets.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    "ASVA_GIT_COMMIT",
    "MLFLOW_DISABLE_TELEMETRY",
    # glibc's allocator: a fixed mmap threshold returns freed large tensors to the OS (the dynamic one keeps up to
    # GBs of a full-size model's freed build memory in the heap); bench/rehearsal.py sets it
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX",
)
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


RUNTIME_DEFAULT_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # MLflow's telemetry thread sets and pops _MLFLOW_TELEMETRY_SESSION_ID in os.environ while requests read it:
    # a trial's log_batch failed with KeyError('_MLFLOW_TELEMETRY_SESSION_ID') (and it phones home)
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
"""Environment defaults of every process the platform starts (a value already set wins)."""


def apply_runtime_defaults() -> None:
    """Process-level defaults that must be set before ray/deepspeed/mlflow are imported (see README gotchas)."""
    for key, value in RUNTIME_DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    if "DS_ACCELERATOR" not in os.environ:
        try:
            import torch

            os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            os.environ["DS_ACCELERATOR"] = "cpu"


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The non-secret env Ray workers need, from this process's environment."""
    # DS_ACCELERATOR is not forwarded: each worker picks it from its own hardware (a CPU-only driver must not
    # turn GPU trainers into CPU ones).
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env.update(extra or {})
    leaked = [k for k in env if k in SECRET_ENV]
    assert not leaked, f"refusing to forward secrets to Ray workers: {leaked}"
    return env


def _job_runtime_env() -> dict:
    """The runtime env of the Ray job this process is the entrypoint of ({} outside a job)."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("runtime_env") or {}
    except json.JSONDecodeError:
        return {}


def init_ray(cluster_cfg: ClusterConfig, extra_env: dict[str, str] | None = None):
    """Join the configured cluster ($RAY_ADDRESS or ``cluster.address``), else start a local Ray."""
    apply_runtime_defaults()
    import ray

    if ray.is_initialized():
        return ray
    address = cluster_cfg.address or os.environ.get("RAY_ADDRESS") or None
    env_vars = worker_env(extra_env)
    # Inside a Ray job, Ray refuses a driver runtime env that repeats keys of the job's own; the job's
    # env vars already reach every worker, so pass only what it lacks.
    job_env = _job_runtime_env().get("env_vars") or {}
    env_vars = {k: v for k, v in env_vars.items() if k not in job_env}
    kwargs = (
        {"runtime_env": {"env_vars": env_vars}, "log_to_driver": True}
        if env_vars
        else {"log_to_driver": True}
    )
    if address and address.startswith("http"):
        # RAY_ADDRESS for the job CLI is the dashboard URL; a driver inside a job joins the running cluster.
        address = "auto"
    if address:
        ray.init(address=address, **kwargs)
    else:
        if cluster_cfg.num_cpus:
            kwargs["num_cpus"] = cluster_cfg.num_cpus
        ray.init(address="local", include_dashboard=False, **kwargs)
    return ray


def joined(cluster_cfg: ClusterConfig) -> bool:
    """Whether jobs join a running cluster (``cluster.address`` or ``$RAY_ADDRESS``) instead of starting a local
    Ray: a joined cluster may autoscale, a local one never grows."""
    return bool(cluster_cfg.address or os.environ.get("RAY_ADDRESS"))


def local_resources(cluster_cfg: ClusterConfig) -> dict[str, float]:
    """What a local Ray started with ``cluster_cfg`` will have, before it starts: ``cluster.num_cpus`` (else this
    machine's CPUs) and this machine's GPUs."""
    import torch

    return {
        "CPU": float(cluster_cfg.num_cpus or os.cpu_count() or 1),
        "GPU": float(torch.cuda.device_count()),
    }


def check_fits(what: str, need: dict[str, float], have: dict[str, float], fix: str, may_grow: bool) -> None:
    """The one "does it fit" check: ``what`` needs ``need`` (Ray resource -> amount) of a cluster that has
    ``have``. Work that can never be scheduled would wait forever, so a cluster that cannot grow fails now in one
    line saying what to lower (``fix``); one that may (a joined cluster: its autoscaler) gets a warning."""
    short = [
        f"{amount:g} {name} (cluster has {have.get(name, 0):g})"
        for name, amount in need.items()
        if amount and have.get(name, 0) + 1e-9 < amount
    ]
    if not short:
        return
    msg = f"{what} needs {' and '.join(short)}: {fix}"
    if may_grow:
        print(f"warning: {msg} (waiting for the autoscaler, if any)")
    else:
        raise UserError(msg)
