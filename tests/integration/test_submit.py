"""Jobs on a real `ray start --head` cluster: `ray job submit` (Ray's CLI) and `asva submit` run the same
entrypoint; logs are followed; the MLflow run the job creates carries the submission id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from asva_platform import submit
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.dev.ray_local import start_ray_head, stop_ray_head
from asva_platform.dev.s3_server import load_or_create_key
from asva_platform.tracking import TAG_SUBMISSION_ID
from tests.ray_nodes import session_token

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_head(s3_server, mlflow_server, tmp_path_factory):
    state = tmp_path_factory.mktemp("ray-head")
    head = start_ray_head(
        state,
        session_token(),
        num_cpus=4,
        extra_env=s3_server.env | {"MLFLOW_TRACKING_URI": mlflow_server.uri},
    )
    yield head
    stop_ray_head(head.temp_dir, head.address)


@pytest.fixture(scope="module")
def job_args(s3_server, tmp_path_factory):
    _, overrides = tiny_inputs(tmp_path_factory.mktemp("inputs"), clips_per_class=1, max_duration=2.6)
    return [
        "--config",
        "configs/tiny.yaml",
        *overrides,
        f"storage.root=s3://{s3_server.bucket}/submit-test",
        "dataset.max_clips_per_class=1",
        "preprocess.windows_per_clip=1",
        "preprocess.splits=[train]",
    ]


def runs_with_submission_id(uri: str, submission_id: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("preprocess")
    assert exp is not None
    return client.search_runs([exp.experiment_id], f"tags.`{TAG_SUBMISSION_ID}` = '{submission_id}'")


def test_ray_job_submit_cli(ray_head, job_args, mlflow_server):
    env = dict(os.environ, RAY_ADDRESS=ray_head.dashboard_url)
    sub_id = "cli-preprocess-1"
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--working-dir",
            ".",
            "--submission-id",
            sub_id,
            "--",
            "python",
            "-m",
            "jobs.preprocess",
            *job_args,
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = submit.last_json_line(out.stdout)  # the CLI follows the logs by default
    assert result["cache_id"] and result["rows"] > 0
    runs = runs_with_submission_id(mlflow_server.uri, sub_id)
    assert len(runs) == 1 and runs[0].data.tags["asva.cache_id"] == result["cache_id"]


def test_asva_submit_follows_logs_and_tags_the_run(ray_head, job_args, mlflow_server, s3_server):
    env = dict(os.environ, RAY_ADDRESS=ray_head.dashboard_url, MLFLOW_TRACKING_URI=mlflow_server.uri)
    sub_id = "asva-preprocess-1"
    config, overrides = job_args[1], job_args[2:]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asva_platform.cli",
            "submit",
            "preprocess",
            "--config",
            config,
            *overrides,
            "--submission-id",
            sub_id,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"job {sub_id} SUCCEEDED" in out.stdout
    assert "python -m jobs.preprocess --config configs/tiny.yaml" in out.stdout  # logs were streamed
    assert submit.job_status(sub_id, ray_head.dashboard_url) == "SUCCEEDED"
    assert sub_id in [row["submission_id"] for row in submit.list_jobs(ray_head.dashboard_url)]
    runs = runs_with_submission_id(mlflow_server.uri, sub_id)
    assert len(runs) == 1
    # The entrypoint carries no credentials; the runtime env neither (not the S3 key, not the Ray token).
    info = submit.client(ray_head.dashboard_url).get_job_info(sub_id)
    key = load_or_create_key(Path(s3_server.data_dir))
    for secret in (key.access_key, key.secret_key, session_token().read_text().strip()):
        assert secret not in info.entrypoint and secret not in str(info.runtime_env)


def test_bad_config_is_rejected_before_submission(ray_head):
    env = dict(os.environ, RAY_ADDRESS=ray_head.dashboard_url)
    before = {row["submission_id"] for row in submit.list_jobs(ray_head.dashboard_url)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asva_platform.cli",
            "submit",
            "train",
            "--config",
            "configs/tiny.yaml",
            "train.zero_stage=4",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.startswith(
        "error: configs/tiny.yaml + overrides: train.zero_stage"
    )
    assert {row["submission_id"] for row in submit.list_jobs(ray_head.dashboard_url)} == before


def test_a_job_without_the_token_is_refused(ray_head):
    """The job server runs code for whoever submits: without the cluster's token, nothing is accepted, through
    the REST API (as a remote attacker would post) or Ray's CLI."""
    before = {row["submission_id"] for row in submit.list_jobs(ray_head.dashboard_url)}
    posted = requests.post(
        f"{ray_head.dashboard_url}/api/jobs/", json={"entrypoint": "echo pwned"}, timeout=30
    )
    assert posted.status_code == 401, posted.text
    wrong = requests.post(
        f"{ray_head.dashboard_url}/api/jobs/",
        json={"entrypoint": "echo pwned"},
        timeout=30,
        headers={"Authorization": "Bearer not-the-token"},
    )
    assert wrong.status_code in (401, 403), wrong.text
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    env.update(RAY_ADDRESS=ray_head.dashboard_url, RAY_AUTH_MODE="disabled", HOME=str(ray_head.temp_dir))
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--no-wait", "--", "echo", "pwned"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode != 0 and "authentication" in (cli.stdout + cli.stderr).lower()
    assert {row["submission_id"] for row in submit.list_jobs(ray_head.dashboard_url)} == before


def test_a_driver_that_imported_ray_tune_before_the_clusters_env_still_presents_the_token(ray_head):
    """Ray fixes its auth mode for a process the first time ray.tune / ray.train is imported: a driver that
    imports them and only then applies the cluster's env (as `python -m bench learn` did, through
    sweeps.report) must still send the token, or every submission is refused."""
    script = (
        "import os, sys\n"
        "import sweeps.report  # imports ray.tune and ray.train\n"
        "from ray._private.authentication.authentication_utils import is_token_auth_enabled\n"
        "os.environ.update(RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=sys.argv[2])\n"
        "assert not is_token_auth_enabled()  # the situation this test is about\n"
        "from asva_platform import submit\n"
        "print(len(submit.list_jobs(sys.argv[1])))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run(
        [sys.executable, "-c", script, ray_head.dashboard_url, str(ray_head.token)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().isdigit()
