"""Case 6 mid-run: the S3 server is SIGKILLed while it is being written to, and restarted on the same port and
data directory, as a crashed storage server comes back. The local S3 server keeps its objects on disk, so
the test kills the real server: no forwarder, no mock.

- During training (a checkpoint every step, uploads asynchronous): a short outage is ridden out by the S3
  clients' retries (``storage.max_attempts``): training finishes at its step in the same MLflow run, no
  metric step lost or repeated, the uploads the kill interrupted are redone. An outage longer than the
  retries fails the job in one line naming the endpoint; a re-run resumes from the latest recorded checkpoint.
- During preprocessing (shards being written): the job fails; after the restart every shard that was visible
  is still there, byte for byte, and complete; a re-run writes only what is missing.
In every case, nothing recorded as complete (a checkpoint in Ray Train's snapshot, a shard object) is missing or
truncated after the restart. Outcomes are asserted, not timings: a loaded machine may take its time."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from asva_platform.artifacts import cache as fmt
from asva_platform.artifacts.checkpoint import STATE_FILE
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.dev.s3_server import start_s3_server
from asva_platform.dev.services import env_applied, kill_tree
from asva_platform.dev.stack import start_mlflow_server
from asva_platform.experiment import load_experiment
from asva_platform.inference.checkpoints import consolidated_state_dict, local_checkpoint
from asva_platform.preprocess.job import existing_shards, prepare
from asva_platform.storage import Storage, join, parse_uri
from tests.reliability.helpers import TINY, job_env, tiny_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "s3-outage"
ROOT = f"s3://{BUCKET}/root"
STEPS = 12
KILL_AT_STEP = 4
SHORT_OUTAGE_S = 8.0  # well inside the retries of boto3 (about 10 s) and pyarrow (about 50 s) at 8 attempts


class Servers:
    """This module's own S3 (SeaweedFS) and MLflow servers; the S3 server can be killed and brought back."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.s3 = start_s3_server(work / "s3", bucket=BUCKET)
        self.mlflow = start_mlflow_server(work / "mlflow", f"s3://{BUCKET}/mlartifacts", self.s3)

    def kill_s3(self) -> None:
        self.s3.kill()

    def restart_s3(self) -> None:
        self.s3 = start_s3_server(self.work / "s3", port=self.s3.port, bucket=BUCKET)

    def stop(self) -> None:
        self.mlflow.stop()
        self.s3.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    work = tmp_path_factory.mktemp("s3-outage")
    servers = Servers(work)
    with env_applied(servers.s3.env):  # this process (cache building, checks) talks to the same server
        try:
            overrides, storage = tiny_cache(work, ROOT, servers.mlflow.uri)
            servers.overrides, servers.storage = overrides, storage
            yield servers
        finally:
            servers.stop()


def train_cmd(servers, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.train",
        "--config",
        TINY,
        "--json",
        *servers.overrides,
        f"name={name}",
        f"train.max_steps={STEPS}",
        "train.checkpoint_every=1",
        "train.keep_checkpoints=3",
        "train.log_every=1",
        "train.validate_every=0",
        "train.export=false",
        "train.batch_size_per_worker=1",
        *extra,
    ]


def start_job(servers, cmd: list[str]) -> tuple[subprocess.Popen, Path]:
    env, ray_tmp = job_env(servers.mlflow.uri)
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


def objects_under(storage, uri: str) -> dict[str, tuple[str, int]]:
    """``key -> (ETag, size)`` of every object under ``uri``."""
    u = parse_uri(uri)
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=u.bucket, Prefix=u.key.rstrip("/") + "/"
    )
    return {o["Key"]: (o["ETag"], o["Size"]) for p in pages for o in p.get("Contents", [])}


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
        assert any(n.endswith(f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt") for n in names), (
            checkpoint_uri,
            names,
        )


def assert_checkpoints_whole(storage, name: str, tmp_path: Path) -> list[str]:
    recorded = recorded_checkpoints(storage, name)
    assert recorded, f"no checkpoint recorded for {name}"
    for step in recorded:
        assert_whole(storage, join(ROOT, "runs", name, step))
    latest = join(ROOT, "runs", name, recorded[-1])
    weights = consolidated_state_dict(local_checkpoint(storage, latest, tmp_path / name))
    assert weights and all(v.isfinite().all() for v in weights.values())
    return recorded


def assert_kept(storage, name: str, before: dict[str, tuple[str, int]], recorded_before: list[str]) -> None:
    """Every object of a checkpoint recorded before the kill and still recorded now is there with the same bytes
    (ETag and size): the kill lost nothing the server had acknowledged."""
    now = objects_under(storage, join(ROOT, "runs", name))
    still = set(recorded_before) & set(recorded_checkpoints(storage, name))
    kept = {k: v for k, v in before.items() if any(f"/{step}/" in k for step in still)}
    assert kept, f"no checkpoint recorded before the kill is still recorded: {recorded_before}"
    assert {k: now.get(k) for k in kept} == kept


def loss_history(servers, run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=servers.mlflow.uri).get_metric_history(run_id, "loss")


def test_s3_killed_during_checkpoint_uploads_is_ridden_out(servers, tmp_path):
    storage, name = servers.storage, "short-outage"
    proc, ray_tmp = start_job(servers, train_cmd(servers, name))
    events: list[str] = []
    seen: dict = {}

    def outage():
        try:
            wait_for_checkpoint(storage, name, KILL_AT_STEP, proc)
        except AssertionError:
            return
        seen["recorded"] = recorded_checkpoints(storage, name)
        seen["objects"] = objects_under(storage, join(ROOT, "runs", name))
        servers.kill_s3()  # checkpoints of later steps are being saved and uploaded: a step every ~0.5 s
        events.append("killed")
        time.sleep(SHORT_OUTAGE_S)
        servers.restart_s3()
        events.append("restarted")

    killer = threading.Thread(target=outage, daemon=True)
    killer.start()
    out, err = finish(proc, ray_tmp)
    killer.join(timeout=120)
    assert events == ["killed", "restarted"], f"the outage never happened: {events}"
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["final_step"] == STEPS

    history = loss_history(servers, result["run_id"])
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # none lost, none twice
    recorded = assert_checkpoints_whole(storage, name, tmp_path)
    # the uploads the kill interrupted were redone: the checkpoints after it are recorded and whole
    assert recorded[-1] == f"step_{STEPS:08d}" and result["checkpoint_uri"].endswith(recorded[-1])
    state = storage.read_json(join(result["checkpoint_uri"], STATE_FILE))
    assert state["step"] == STEPS
    assert state["resumes"] == [], "a worker group restart, not the retries, carried the run over"


def test_s3_killed_for_longer_than_the_retries_fails_in_one_line_and_a_rerun_resumes(servers, tmp_path):
    storage, name = servers.storage, "long-outage"
    # few attempts, so the outage outlasts the retries quickly; the server stays down until the job exits
    proc, ray_tmp = start_job(servers, train_cmd(servers, name, "storage.max_attempts=2"))
    try:
        wait_for_checkpoint(storage, name, KILL_AT_STEP, proc)
        recorded_before = recorded_checkpoints(storage, name)
        before = objects_under(storage, join(ROOT, "runs", name))
        servers.kill_s3()
        out, err = finish(proc, ray_tmp)
    finally:
        servers.restart_s3()
    assert proc.returncode == 2, err[-4000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: training stopped: S3 at {servers.s3.url} became unreachable"), last
    assert "re-run the same command to resume" in last
    assert "Traceback" not in err.split("error: training stopped")[-1]

    assert_kept(storage, name, before, recorded_before)
    recorded = assert_checkpoints_whole(storage, name, tmp_path)  # nothing partial became "latest"
    assert recorded_before[-1] <= recorded[-1] < f"step_{STEPS:08d}"
    proc, ray_tmp = start_job(servers, train_cmd(servers, name))
    out, err = finish(proc, ray_tmp)
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["final_step"] == STEPS
    resumes = storage.read_json(join(result["checkpoint_uri"], STATE_FILE))["resumes"]
    assert [r["step"] for r in resumes] == [int(recorded[-1].split("_")[1])]
    steps = sorted(m.step for m in loss_history(servers, result["run_id"]))
    assert steps == list(range(1, STEPS + 1)), steps
    assert_checkpoints_whole(storage, name, tmp_path / "rerun")


def test_s3_killed_during_a_cache_write_loses_no_shard_and_a_rerun_writes_the_rest(servers, tmp_path):
    _, overrides = tiny_inputs(tmp_path, clips_per_class=2, max_duration=3.0, image_size=32)
    config = tmp_path / "pp.yaml"
    config.write_text("name: pp-s3-killed\n")
    overrides += [
        f"storage.root={ROOT}/pp",
        "preprocess.windows_per_clip=2",
        "preprocess.clips_per_shard=2",
        f"tracking.uri={servers.mlflow.uri}",
        "cluster.num_cpus=4",
    ]
    cfg = load_experiment(str(config), overrides)
    storage = Storage.from_config(cfg.storage)
    prep = prepare(cfg, storage, log=lambda _: None)
    total = len(prep.shards)
    shards_uri = join(prep.cache_uri, fmt.SHARDS_DIR)

    ray_tmp = tempfile.mkdtemp(prefix="asva-s3k-", dir="/tmp")  # AF_UNIX socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "jobs.preprocess", "--config", str(config), "--json", *overrides]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 400
        before: dict = {}
        while time.time() < deadline and proc.poll() is None:
            before = objects_under(storage, shards_uri)
            if 1 <= len(before) < total:
                break
            time.sleep(0.1)
        assert proc.poll() is None and 1 <= len(before) < total, (
            "the job ended before S3 could be killed mid-write"
        )
        servers.kill_s3()  # the next shards are being encoded and written
        out, err = proc.communicate(timeout=600)
    finally:
        kill_tree(proc.pid)
        servers.restart_s3()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode != 0, "preprocessing finished without its S3 server"
    assert "Traceback" not in err.strip().splitlines()[-1], err[-3000:]

    after = objects_under(storage, shards_uri)
    assert {k: after.get(k) for k in before} == before  # every shard the server had taken, byte for byte
    assert not storage.exists(join(prep.cache_uri, fmt.MANIFEST)), "a failed run must not leave a manifest"
    assert len(existing_shards(prep)) == len(after), "a partial or foreign shard object is visible"

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    final = objects_under(storage, shards_uri)
    assert len(final) == total and {k: final[k] for k in after} == after  # only the missing shards written
    assert result["shards_reused"] == len(after) and result["shards_written"] == total - len(after)
    handle = fmt.open_cache(storage, result["cache_id"], cfg.storage.cache_root)
    rows = [r["window_id"] for split in cfg.preprocess.splits for r in handle.iter_rows(split)]
    assert len(rows) == len(set(rows)) == handle.manifest.totals.rows == result["rows"]
