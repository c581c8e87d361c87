"""Every process the platform starts gets the runtime defaults: the entry points (apply_runtime_defaults), the
local stack's Ray nodes and so every job and worker on them (ray_env), and the workers of a Ray the platform
joins (worker_env). MLflow's telemetry is off among them: its thread sets and pops an os.environ key while
requests read os.environ, which failed a sweep trial's log_batch with KeyError('_MLFLOW_TELEMETRY_SESSION_ID')."""

from __future__ import annotations

import os
import subprocess
import sys

from asva_platform.cluster import RUNTIME_DEFAULT_ENV, worker_env
from asva_platform.dev.ray_local import ray_env


def test_the_stacks_ray_nodes_and_forwarded_workers_run_without_mlflow_telemetry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    token = tmp_path / "token"
    token.write_text("t")
    env = ray_env(token)
    assert all(env[k] == v for k, v in RUNTIME_DEFAULT_ENV.items())
    assert "MLFLOW_DISABLE_TELEMETRY" not in worker_env()
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    assert worker_env()["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_an_entry_point_starts_mlflow_with_telemetry_off_and_keeps_a_users_setting():
    probe = (
        "from asva_platform.cluster import apply_runtime_defaults; apply_runtime_defaults();"
        "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    kept = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os;" + probe.replace("print(", "print(os.environ['MLFLOW_DISABLE_TELEMETRY'],"),
        ],
        env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert kept.stdout.split()[0] == "false"
