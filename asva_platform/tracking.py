"""MLflow tracking: server preflight, run creation with the platform's standard tags, config as params.

Every job logs to the tracking server named by ``tracking.uri`` ($MLFLOW_TRACKING_URI wins). Runs get:
``mlflow.source.git.commit``, ``asva.ray_submission_id`` (when running as a Ray job), ``asva.job``, and
whatever the stage adds (``asva.cache_id``, ``asva.deepspeed_stage`` ...). The resolved config is logged
both as flattened dotted params and as ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import requests

from asva_platform import config as cfg

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
TAG_SUBMISSION_ID = "asva.ray_submission_id"
TAG_JOB = "asva.job"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"


class TrackingError(RuntimeError):
    """The tracking server cannot be used; one line naming the URI."""


def check_tracking_server(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (before any cluster resources are taken) if an http(s) tracking server is unreachable."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        reason = "connection refused" if isinstance(err, requests.ConnectionError) else type(err).__name__
        raise TrackingError(f"cannot reach MLflow tracking server at {uri}: {reason}") from None
    if resp.status_code != 200:
        raise TrackingError(f"MLflow tracking server at {uri} is unhealthy (HTTP {resp.status_code})")


def resolve_tracking_uri(tracking_cfg, state_dir: str | Path = ".asva") -> str:
    """The URI to log to. A required server must answer; an optional one falls back to a local sqlite store
    (documented: runs logged there can be copied to the server later with ``mlflow`` export tools)."""
    uri = tracking_cfg.resolved_uri()
    try:
        check_tracking_server(uri)
        return uri
    except TrackingError:
        if tracking_cfg.required:
            raise
    local = Path(state_dir, "mlflow-offline").resolve()
    local.mkdir(parents=True, exist_ok=True)
    print(f"warning: MLflow server {uri} unreachable and tracking.required=false: logging to {local}")
    return f"sqlite:///{local}/mlflow.db"


def ray_submission_id() -> str:
    """The Ray job submission id when this process is a Ray job's entrypoint, else ''."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if raw:
        try:
            return json.loads(raw).get("metadata", {}).get("job_submission_id", "") or ""
        except json.JSONDecodeError:
            pass
    return os.environ.get("ASVA_SUBMISSION_ID", "")


def git_commit() -> str:
    """The code version: $ASVA_GIT_COMMIT (set by `asva submit`, since Ray's working_dir upload has no .git),
    else `git rev-parse HEAD` of the package's checkout, else ''."""
    if os.environ.get("ASVA_GIT_COMMIT"):
        return os.environ["ASVA_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def standard_tags(job: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    tags = {TAG_JOB: job}
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    sub = ray_submission_id()
    if sub:
        tags[TAG_SUBMISSION_ID] = sub
    for k, v in (extra or {}).items():
        if v is not None and v != "":
            tags[k] = str(v)
    return tags


def config_params(config_obj: Any) -> dict[str, str]:
    """Flattened dotted params, values stringified and clipped to MLflow's limit."""
    out = {}
    for k, v in cfg.flatten(config_obj).items():
        text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        out[k] = text[:MAX_PARAM_VALUE]
    return out


def get_or_create_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_local_artifact_root(client, name))
    except Exception:  # a concurrent creator won the race
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _local_artifact_root(client, experiment: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database, not into ./mlruns of whatever the cwd is."""
    uri = client._tracking_client.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server assigns its own artifact root
    db_dir = Path(uri[len("sqlite:///"):]).parent
    return (db_dir / "artifacts" / experiment).resolve().as_uri()


def log_params_batched(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])


def start_run(uri: str, experiment: str, run_name: str, config_obj: Any = None, tags: dict[str, str] | None = None,
              job: str = "", parent_run_id: str = ""):
    """Create a run (no global mlflow state) and return ``(client, run_id)``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = get_or_create_experiment(client, experiment)
    all_tags = standard_tags(job, tags)
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    if config_obj is not None:
        log_params_batched(client, run.info.run_id, config_params(config_obj))
        client.log_text(run.info.run_id, cfg.dump_yaml(config_obj), "config.yaml")
    return client, run.info.run_id
