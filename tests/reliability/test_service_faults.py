"""Cases 6 and 7 at start: the S3 server or the MLflow tracking server is down when a job starts.

Real servers, really stopped: each test starts its OWN S3 (SeaweedFS) / mlflow server (never the shared
fixtures'), stops it, then runs the real jobs. Expected: one ``error: ...`` line naming the endpoint, exit
2, no Ray started (see job_probe.py); with ``tracking.required=false`` an unreachable server falls back,
with a warning, to a local sqlite store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asva_platform.dev.s3_server import start_s3_server
from asva_platform.dev.services import free_port, restored_env
from asva_platform.dev.stack import start_mlflow_server
from tests.reliability.job_probe import run_jobs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")


def test_s3_down_at_start_names_the_endpoint(tmp_path):
    s3 = start_s3_server(tmp_path / "s3", bucket="down")
    s3.stop()  # a real server that was there and is gone (its port is now closed)
    endpoint = s3.url
    root = ["storage.root=s3://down/root", "tracking.required=false"]
    config = tmp_path / "pp.yaml"
    config.write_text(f"base: {TINY}\nname: s3-down\n")
    run_jobs(
        {
            "train": (
                "jobs.train",
                ["--config", TINY, *root, "train.cache=anything"],
                [endpoint, "s3://down"],
            ),
            "preprocess": ("jobs.preprocess", ["--config", str(config), *root], [endpoint, "s3://down"]),
        },
        tmp_path,
        env_extra=s3.env,
    )


def test_mlflow_down_at_start_is_one_line_when_required(s3_server, tmp_path):
    mlflow = start_mlflow_server(
        tmp_path / "mlflow", artifacts_uri=f"s3://{s3_server.bucket}/mlf-down", s3=s3_server
    )
    mlflow.stop()
    args = [
        "--config",
        TINY,
        f"storage.root=s3://{s3_server.bucket}/mlflow-down",
        "train.cache=anything",
        "tracking.required=true",
    ]
    run_jobs(
        {"train": ("jobs.train", args, ["cannot reach MLflow tracking server", mlflow.uri])},
        tmp_path,
        env_extra={"MLFLOW_TRACKING_URI": mlflow.uri},
    )


def test_mlflow_down_at_start_falls_back_to_local_store_when_optional(tmp_path, capsys):
    from asva_platform.experiment import load_experiment
    from asva_platform.tracking import resolve_tracking_uri

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = load_experiment(TINY, [f"tracking.uri={uri}", "tracking.required=false"])
    import os

    with restored_env(["MLFLOW_TRACKING_URI"]):
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # $MLFLOW_TRACKING_URI wins over tracking.uri
        resolved = resolve_tracking_uri(cfg.tracking, state_dir=tmp_path)
    assert resolved == f"sqlite:///{tmp_path.resolve()}/mlflow-offline/mlflow.db"
    assert f"MLflow server {uri} unreachable" in capsys.readouterr().out
