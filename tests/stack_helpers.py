"""A local stack of a test's own, started as users start it (`asva stack up` in a subprocess), with its own ports
and state directory, and marked so that every process it starts can be found (:mod:`tests.leftovers`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

from asva_platform.dev import stack
from asva_platform.dev.services import env_applied, free_ports
from tests import leftovers

REPO = Path(__file__).resolve().parents[1]


def stack_env(state: Path, **extra: str) -> dict[str, str]:
    """The environment of a stack of its own (ports, state dir), marked so that its processes can be found."""
    s3, mlflow, gcs, dashboard = free_ports(4)
    env = dict(
        os.environ,
        ASVA_STATE_DIR=str(state),
        ASVA_S3_PORT=str(s3),
        ASVA_MLFLOW_PORT=str(mlflow),
        ASVA_RAY_PORT=str(gcs),
        ASVA_DASHBOARD_PORT=str(dashboard),
        ASVA_RAY_NUM_CPUS="2",
    )
    env.update(extra)
    env[leftovers.SESSION_ENV] = uuid.uuid4().hex  # every process the stack starts inherits it
    env.pop("RAY_ADDRESS", None)
    return env


def settings_of(env: dict[str, str]) -> stack.StackSettings:
    return stack.StackSettings.from_env(env["ASVA_STATE_DIR"], env)


def asva(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "asva_platform.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def stack_objects(settings: stack.StackSettings) -> dict[str, str]:
    """Every object in the stack's bucket and the sha256 of its bytes, read with the stack's own key."""
    from asva_platform.storage import Storage

    with env_applied(settings.client_env()):
        storage = Storage(settings.s3_url)
        return {
            uri: hashlib.sha256(storage.read_bytes(uri)).hexdigest()
            for uri in storage.list(f"s3://{settings.bucket}/")
        }


def mlflow_artifacts(settings: stack.StackSettings, scratch: Path) -> dict[tuple[str, str], str]:
    """Every artifact of every run the stack's MLflow lists, ``(run id, path) -> sha256``, downloaded through the
    MLflow server (as the UI fetches them)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.mlflow_url)
    found = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            pending = [None]
            while pending:
                for item in client.list_artifacts(run.info.run_id, pending.pop()):
                    if item.is_dir:
                        pending.append(item.path)
                        continue
                    local = client.download_artifacts(run.info.run_id, item.path, str(scratch))
                    found[run.info.run_id, item.path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
    return found
