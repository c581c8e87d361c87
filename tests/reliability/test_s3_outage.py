"""Case 6 mid-run: the S3 endpoint goes down during training (a checkpoint every step, so uploads are in
flight) and comes back with its data, as a restarted durable S3 service would (see ``tcp_outage``: moto keeps
buckets in memory, so the job reaches it through a forwarder that the test cuts). The test checks results on
moto directly.

- A short outage (12 s) is ridden out by the S3 clients' retries (``storage.max_attempts``, standard mode):
  training finishes at the configured step, in the same MLflow run, with no metric step lost or repeated; the
  uploads being asynchronous, steps go on during the outage.
- An outage longer than the retries fails the job with one line naming the endpoint; a re-run resumes from the
  latest checkpoint Ray Train recorded.
In both, every recorded checkpoint is whole (both ranks' shards + trainer state) and the latest consolidates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from asva_platform.artifacts.checkpoint import STATE_FILE, consolidated_state_dict, local_checkpoint
from asva_platform.dev.stack import restored_env, start_mlflow_server, start_s3_server
from asva_platform.storage import join
from tests.reliability.helpers import TINY, job_env, tiny_cache
from tests.reliability.tcp_outage import TcpOutage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "s3-outage"
ROOT = f"s3://{BUCKET}/root"
STEPS = 12
OUTAGE_AT_STEP = 4


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Own S3 + MLflow servers (MLflow reaches S3 directly: only the training job's path is cut), a tiny cache,
    and the forwarder the job's S3 traffic goes through."""
    work = tmp_path_factory.mktemp("s3-outage")
    s3 = start_s3_server(bucket=BUCKET, log_dir=work)
    mlflow = start_mlflow_server(work / "mlflow", f"s3://{BUCKET}/mlartifacts", s3)
    proxy = TcpOutage(s3.port)
    proxy.up()
    with restored_env(s3.env):
        os.environ.update(s3.env)  # this process (cache building, checks) talks to moto directly
        try:
            overrides, storage = tiny_cache(work, ROOT, mlflow.uri)
            yield {"s3": s3, "mlflow": mlflow, "proxy": proxy, "overrides": overrides, "storage": storage}
        finally:
            proxy.down()
            mlflow.stop()
            s3.stop()


def train_cmd(servers, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.train", "--config", TINY, "--json", *servers["overrides"], f"name={name}",
            f"train.max_steps={STEPS}", "train.checkpoint_every=1", "train.keep_checkpoints=3", "train.log_every=1",
            "train.validate_every=0", "train.export=false", "train.batch_size_per_worker=1", *extra]


def start_job(servers, cmd: list[str]) -> tuple[subprocess.Popen, Path]:
    env, ray_tmp = job_env(servers["mlflow"].uri)
    env.update({**servers["s3"].env, "AWS_ENDPOINT_URL": servers["proxy"].url})
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, ray_tmp


def finish(proc: subprocess.Popen, ray_tmp: Path) -> tuple[str, str]:
    out, err = proc.communicate(timeout=900)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return out, err


def recorded_checkpoints(storage, name: str) -> list[str]:
    """The checkpoints Ray Train's snapshot lists for run ``name`` (what a resume may pick)."""
    try:
        text = storage.read_bytes(join(ROOT, "runs", name, "checkpoint_manager_snapshot.json")).decode()
    except Exception:
        return []
    return sorted(set(re.findall(r"step_\d{8}", text)))


def wait_for_checkpoint(storage, name: str, step: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if f"step_{step:08d}" in recorded_checkpoints(storage, name):
            return
        time.sleep(0.1)
    raise AssertionError(f"checkpoint step {step} of {name} never appeared (job exit code {proc.poll()})")


def assert_whole(storage, checkpoint_uri: str) -> None:
    names = {Path(uri).name for uri in storage.list(checkpoint_uri)}
    assert {"latest", STATE_FILE} <= names, (checkpoint_uri, names)
    for rank in (0, 1):
        assert any(n.endswith(f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt") for n in names), (checkpoint_uri,
                                                                                                   names)


def assert_checkpoints_whole(storage, name: str, tmp_path: Path) -> list[str]:
    recorded = recorded_checkpoints(storage, name)
    assert recorded, f"no checkpoint recorded for {name}"
    for step in recorded:
        assert_whole(storage, join(ROOT, "runs", name, step))
    latest = join(ROOT, "runs", name, recorded[-1])
    weights = consolidated_state_dict(local_checkpoint(storage, latest, tmp_path / name))
    assert weights and all(v.isfinite().all() for v in weights.values())
    return recorded


def loss_history(servers, run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=servers["mlflow"].uri).get_metric_history(run_id, "loss")


def test_short_outage_is_ridden_out_by_retries(servers, tmp_path):
    storage, proxy, outage_s = servers["storage"], servers["proxy"], 12.0
    proc, ray_tmp = start_job(servers, train_cmd(servers, "short-outage"))
    events: list[tuple[str, float]] = []

    def outage():
        try:
            wait_for_checkpoint(storage, "short-outage", OUTAGE_AT_STEP, proc)
        except AssertionError:
            return
        proxy.down()
        events.append(("down", time.time()))
        time.sleep(outage_s)
        proxy.up()
        events.append(("up", time.time()))

    cutter = threading.Thread(target=outage, daemon=True)
    cutter.start()
    out, err = finish(proc, ray_tmp)
    ended = time.time()
    cutter.join(timeout=60)
    assert [e for e, _ in events] == ["down", "up"], f"the outage never happened: {events}"
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["final_step"] == STEPS

    history = loss_history(servers, result["run_id"])
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # none lost, none twice
    # Uploads are asynchronous (train.checkpoint_upload's default): training went on while S3 was down, and the
    # job could end only after S3 was back, once the checkpoints queued during the outage had reached it
    down, up = events[0][1] * 1000, events[1][1] * 1000
    during = [m.step for m in history if down + 1000 < m.timestamp < up]
    assert during, "no step finished while S3 was down: the checkpoint upload stalled training"
    assert ended * 1000 > up, "the job ended while S3 was down: its last uploads cannot have finished"

    recorded = assert_checkpoints_whole(storage, "short-outage", tmp_path)
    assert recorded[-1] == f"step_{STEPS:08d}" and result["checkpoint_uri"].endswith(recorded[-1])
    state = storage.read_json(join(result["checkpoint_uri"], STATE_FILE))
    assert state["step"] == STEPS
    assert state["extra"]["resumes"] == [], "a worker group restart, not the retries, carried the run over"


def test_long_outage_fails_in_one_line_and_a_rerun_resumes(servers, tmp_path):
    storage, proxy = servers["storage"], servers["proxy"]
    # few attempts, so the outage outlasts the retries quickly; the forwarder stays down until the job exits
    cmd = train_cmd(servers, "long-outage", "storage.max_attempts=2")
    proc, ray_tmp = start_job(servers, cmd)
    try:
        wait_for_checkpoint(storage, "long-outage", OUTAGE_AT_STEP, proc)
        proxy.down()
        out, err = finish(proc, ray_tmp)
    finally:
        proxy.up()
    assert proc.returncode == 2, err[-4000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: training stopped: S3 at {proxy.url} became unreachable"), last
    assert "re-run the same command to resume" in last
    assert "Traceback" not in err.split("error: training stopped")[-1]

    recorded = assert_checkpoints_whole(storage, "long-outage", tmp_path)  # nothing partial became "latest"
    assert int(recorded[-1].split("_")[1]) < STEPS
    proc, ray_tmp = start_job(servers, train_cmd(servers, "long-outage"))
    out, err = finish(proc, ray_tmp)
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["final_step"] == STEPS
    resumes = storage.read_json(join(result["checkpoint_uri"], STATE_FILE))["extra"]["resumes"]
    assert [r["step"] for r in resumes] == [int(recorded[-1].split("_")[1])]
    steps = sorted(m.step for m in loss_history(servers, result["run_id"]))
    assert steps == list(range(1, STEPS + 1)), steps
    assert_checkpoints_whole(storage, "long-outage", tmp_path / "rerun")
