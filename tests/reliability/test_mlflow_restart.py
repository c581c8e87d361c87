"""Case 7 mid-run: the MLflow tracking server is stopped during training and restarted (same port, same
sqlite store) a few seconds later. Training must continue and finish, and no metric step may be lost or
logged twice: the MLflow client's HTTP retries (exponential backoff) carry the writes over the outage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from asva_platform.dev.s3_server import start_s3_server
from asva_platform.dev.services import env_applied
from asva_platform.dev.stack import start_mlflow_server
from tests.reliability.helpers import TINY, job_env, tiny_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = 10


def test_training_survives_mlflow_restart_without_losing_metrics(tmp_path):
    s3 = start_s3_server(tmp_path / "s3", bucket="mlflow-restart")
    holder = {"mlflow": start_mlflow_server(tmp_path / "mlflow", "s3://mlflow-restart/mlartifacts", s3)}
    port, uri = holder["mlflow"].port, holder["mlflow"].uri
    with env_applied(s3.env):
        events: list[str] = []
        try:
            overrides, _ = tiny_cache(tmp_path, "s3://mlflow-restart/root", uri)
            env, ray_tmp = job_env(uri)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)

            def restart_after_first_metrics():
                deadline = time.time() + 400
                while time.time() < deadline:
                    try:
                        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
                        if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 2:
                            break
                    except Exception:
                        pass
                    time.sleep(0.3)
                else:
                    return
                holder["mlflow"].stop()
                events.append("stopped")
                time.sleep(3)
                holder["mlflow"] = start_mlflow_server(
                    tmp_path / "mlflow", "s3://mlflow-restart/mlartifacts", s3, port=port
                )
                events.append("restarted")

            restarter = threading.Thread(target=restart_after_first_metrics, daemon=True)
            restarter.start()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "jobs.train",
                    "--config",
                    TINY,
                    "--json",
                    *overrides,
                    "name=mlflow-restart",
                    f"train.max_steps={STEPS}",
                    "train.checkpoint_every=5",
                    "train.log_every=1",
                    "train.validate_every=0",
                    "train.export=false",
                    "train.batch_size_per_worker=1",
                ],
                capture_output=True,
                text=True,
                timeout=900,
                cwd=REPO,
                env=env,
            )
            restarter.join(timeout=120)
            shutil.rmtree(ray_tmp, ignore_errors=True)
            assert events == ["stopped", "restarted"], f"the server was not restarted mid-run: {events}"
            assert proc.returncode == 0, proc.stderr[-4000:]
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            assert result["final_step"] == STEPS
            run = client.get_run(result["run_id"])
            assert run.info.status == "FINISHED"
            steps = [m.step for m in client.get_metric_history(result["run_id"], "loss")]
            assert sorted(steps) == list(range(1, STEPS + 1)), steps  # none lost, none twice
        finally:
            holder["mlflow"].stop()
            s3.stop()
