"""Two jobs at once on one cluster: a training job and a guidance sweep submitted concurrently (Ray's job API,
as `asva submit` does) to a real two-node cluster both finish, their runs overlap in time, and afterwards the
cluster holds no placement group and no actor that it did not hold before them.

The baseline is taken after a first short training job (whose checkpoint the sweep then evaluates): Ray starts
some cluster-wide actors once (Ray Data's autoscaling coordinator, Ray Train's state actor) and keeps them
for every later job; they are not a job's leftovers."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from asva_platform import submit
from tests.ray_nodes import ray_cluster_of
from tests.train_helpers import FAST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = [
    "train.num_workers=2",
    "train.cpus_per_worker=1",
    "train.validate_every=0",
    "train.export=false",
    "train.checkpoint_every=2",
]


@pytest.fixture
def cluster(s3_server, mlflow_server, tmp_path):
    env = s3_server.env | {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    with ray_cluster_of(tmp_path / "ray", env, workers=1) as (head, _):
        yield head


def run_job(head, stage: str, config: str, overrides: list[str], sub_id: str) -> str:
    sub = submit.build_submission(stage, config, overrides, sub_id, flags=("--json",))
    return submit.submit(sub, head.dashboard_url)


def finished(head, job_id: str, key: str) -> dict:
    """The job's ``--json`` result (which has ``key``) once it succeeded; its log may trail the status a moment."""
    status = submit.wait(job_id, head.dashboard_url, timeout=1200)
    for _ in range(30):
        logs = submit.job_logs(job_id, head.dashboard_url)
        assert status == "SUCCEEDED", logs[-4000:]
        if key in (result := submit.last_json_line(logs)):
            return result
        time.sleep(1)
    raise AssertionError(f"job {job_id} printed no result with {key!r}: {logs[-3000:]}")


def live_actors(head) -> Counter:
    from ray.util.state import list_actors

    return Counter(
        a.class_name
        for a in list_actors(
            address=head.dashboard_url,
            filters=[("state", "=", "ALIVE")],
            limit=1000,
            raise_on_missing_output=False,
        )
    )


def held_placement_groups(head) -> list:
    from ray.util.state import list_placement_groups

    return [
        pg
        for pg in list_placement_groups(address=head.dashboard_url, limit=1000, raise_on_missing_output=False)
        if pg.state != "REMOVED"
    ]


def test_a_training_job_and_a_guidance_sweep_share_a_cluster_and_leave_nothing(cluster, train_inputs):
    overrides, _, _ = train_inputs
    base = finished(
        cluster,
        run_job(
            cluster,
            "train",
            "configs/tiny.yaml",
            [*overrides, *FAST, *TRAIN, "name=shared-base", "train.max_steps=2"],
            "shared-base",
        ),
        "checkpoint_uri",
    )
    before_actors, before_pgs = live_actors(cluster), held_placement_groups(cluster)
    assert not before_pgs, before_pgs

    train_id = run_job(
        cluster,
        "train",
        "configs/tiny.yaml",
        [*overrides, *FAST, *TRAIN, "name=shared-train", "train.max_steps=6"],
        "shared-train",
    )
    sweep_id = run_job(
        cluster,
        "sweep",
        "sweeps/guidance_scale_tiny.yaml",
        [
            *(f"base.{o}" for o in overrides),
            "name=shared-guidance",
            f"checkpoint={base['checkpoint_uri']}",
            "base.generate.num_inference_steps=2",
        ],
        "shared-guidance",
    )
    trained, swept = finished(cluster, train_id, "final_step"), finished(cluster, sweep_id, "trials")
    assert trained["final_step"] == 6
    assert swept["trials"] == 3 and swept["failed"] == 0, json.dumps(swept)[:2000]

    jobs = {j: submit.client(cluster.dashboard_url).get_job_info(j) for j in (train_id, sweep_id)}
    starts, ends = [jobs[j].start_time for j in jobs], [jobs[j].end_time for j in jobs]
    assert max(starts) < min(ends), "the two jobs did not run at the same time"

    assert not held_placement_groups(cluster)  # every trial's and the trainer's group was removed
    leaked = live_actors(cluster) - before_actors
    assert not leaked, f"actors left alive after both jobs: {dict(leaked)}"
