"""Losing a node in the middle of a multi-node training run (real processes, real Ray nodes on this machine).

A `ray start --head` node and a `ray start --address` worker node (tests/ray_nodes.py); `jobs.train` runs as a
user runs it (RAY_ADDRESS, a driver on the head) with one worker per node (STRICT_SPREAD, and 2 of a node's 3
CPUs per worker). Once the step-4
checkpoint is recorded, every process of the worker node (its raylet, its workers, its agents) is SIGKILLed
at once (``stack.kill_ray_node``), as a lost machine.

(a) fixed size: a replacement node joins; Ray Train's FailureConfig restarts the worker group there from the
    latest checkpoint and the run ends at its final step, having recomputed at most one checkpoint interval.
(b) elastic (`train.min_workers=1`): no replacement at first; the run resumes on the surviving node alone
    (accumulating twice as many micro-batches, the same global batch), then grows back to two workers when a
    new node joins, and finishes.
In both, MLflow holds every step once and each recorded position says where the ranks ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asva_platform.dev import ray_local as stack
from asva_platform.storage import join
from asva_platform.training.job import latest_checkpoint_uri
from tests.ray_nodes import ray_cluster_of, wait_for_nodes
from tests.train_helpers import (
    FAST,
    TINY,
    assert_no_duplicate_steps,
    config,
    history,
    mlflow_client,
    trainer_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CHECKPOINT_EVERY = 4


@pytest.fixture
def cluster(s3_server, mlflow_server, tmp_path):
    """Nodes of 3 CPUs: one 2-CPU worker fits per node (what an elastic run counts when it sizes itself), with
    room left for Ray Data's tasks."""
    env = s3_server.env | {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    with ray_cluster_of(tmp_path / "ray", env, workers=1, cpus=3) as (head, nodes):
        yield head, nodes[0], env, tmp_path


def start_training(head, train_inputs, env, name: str, steps: int, *extra: str) -> subprocess.Popen:
    overrides, _, _ = train_inputs
    cmd = [
        sys.executable,
        "-m",
        "jobs.train",
        "--config",
        TINY,
        "--json",
        *overrides,
        *FAST,
        f"name={name}",
        "train.placement_strategy=STRICT_SPREAD",
        "train.num_workers=2",
        "train.cpus_per_worker=2",
        f"train.max_steps={steps}",
        f"train.checkpoint_every={CHECKPOINT_EVERY}",
        "train.log_every=1",
        "train.validate_every=0",
        "train.export=false",
        "train.max_failures=3",
        *extra,
    ]
    job_env = dict(os.environ, **env, RAY_ADDRESS=head.address, DS_ACCELERATOR="cpu")
    return subprocess.Popen(
        cmd, cwd=REPO, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.2)
    _, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    raise AssertionError(f"{what} never happened (job exit code {proc.poll()}): {err[-3000:]}")


def finished(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def kill_after_checkpoint(storage, run_uri: str, node, proc, client, run_id_of) -> tuple[int, float]:
    """SIGKILL ``node`` once the step-4 checkpoint is recorded; returns the last step MLflow had then, and when."""
    wait_until(
        lambda: (latest_checkpoint_uri(storage, run_uri) or "").endswith(f"step_{CHECKPOINT_EVERY:08d}"),
        proc,
        "the first checkpoint",
    )
    killed = stack.kill_ray_node(node)
    assert killed, "no process of the worker node was found"
    return max(s for s, _ in history(client, run_id_of(), "loss")), time.time()


def report_cost(client, run_id: str, killed_at: int, kill_time: float, resumed_from: int) -> None:
    """What the node loss cost, for docs/reliability.md (shown with ``pytest -s``)."""
    times = {m.step: m.timestamp / 1000 for m in client.get_metric_history(run_id, "loss")}
    # steps up to killed_at were logged before the loss; their recomputation is not logged again
    print(
        f"\nnode lost at step {killed_at}; resumed from step {resumed_from} ({killed_at - resumed_from} steps "
        f"recomputed); step {killed_at + 1} logged {times[killed_at + 1] - kill_time:.1f} s after the kill "
        f"(a step takes {times[killed_at] - times[killed_at - 1]:.1f} s before it)",
        flush=True,
    )


def run_id_by_name(client, name: str) -> str:
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`mlflow.runName` = '{name}'",
    )
    assert len(runs) == 1, runs
    return runs[0].info.run_id


def test_fixed_size_run_resumes_on_a_replacement_node(cluster, train_inputs, mlflow_server):
    head, worker, env, tmp = cluster
    _, _, storage = train_inputs
    client = mlflow_client(mlflow_server)
    name, steps = "node-loss-fixed", 12
    proc = start_training(head, train_inputs, env, name, steps)
    run_uri = join(config(train_inputs).storage.runs_root, name)
    killed_at, kill_time = kill_after_checkpoint(
        storage, run_uri, worker, proc, client, lambda: run_id_by_name(client, name)
    )
    wait_for_nodes(head.address, ["asva_node_0"])  # the cluster saw the node go
    stack.start_ray_worker_node(head, 2, 3, tmp / "logs", extra_env=env)  # the replacement
    result = finished(proc)

    assert result["final_step"] == steps
    state = trainer_state(storage, result["checkpoint_uri"])
    resumes = state["resumes"]
    assert resumes and resumes[0]["world_size"] == [2, 2]
    assert killed_at - resumes[0]["step"] <= CHECKPOINT_EVERY, (
        killed_at,
        resumes,
    )  # at most one interval lost
    report_cost(client, result["run_id"], killed_at, kill_time, resumes[0]["step"])
    nodes = {r["node_id"] for r in state["ranks"]}
    assert len(nodes) == 2, state["ranks"]  # again one rank per node: the head and the replacement
    assert [s for s, _ in history(client, result["run_id"], "loss")] == list(range(1, steps + 1))
    assert_no_duplicate_steps(client, result["run_id"])


def test_elastic_run_shrinks_to_the_surviving_node_and_grows_back(cluster, train_inputs, mlflow_server):
    head, worker, env, tmp = cluster
    _, _, storage = train_inputs
    client = mlflow_client(mlflow_server)
    name, steps = "node-loss-elastic", 60
    proc = start_training(
        head, train_inputs, env, name, steps, "train.min_workers=1", "train.elastic_resize_check_s=2"
    )
    run_uri = join(config(train_inputs).storage.runs_root, name)
    run_id = lambda: run_id_by_name(client, name)  # noqa: E731
    killed_at, kill_time = kill_after_checkpoint(storage, run_uri, worker, proc, client, run_id)
    # no replacement: the run goes on with one worker (rank 0 records the group's size when it starts)
    wait_until(
        lambda: client.get_run(run_id()).data.tags.get("asva.world_size") == "1", proc, "a 1-worker restart"
    )
    # ...and checkpoints there (a checkpoint is what records a restart, and what the next restart resumes from)
    wait_until(
        lambda: (latest_checkpoint_uri(storage, run_uri) or "").endswith(f"step_{2 * CHECKPOINT_EVERY:08d}"),
        proc,
        "a checkpoint of the 1-worker group",
    )
    shrunk_at = max(s for s, _ in history(client, run_id(), "loss"))
    stack.start_ray_worker_node(head, 2, 3, tmp / "logs", extra_env=env)  # room to grow again
    result = finished(proc)

    assert result["final_step"] == steps
    state = trainer_state(storage, result["checkpoint_uri"])
    sizes = [tuple(r["world_size"]) for r in state["resumes"]]
    assert (2, 1) in sizes and (1, 2) in sizes and sizes.index((2, 1)) < sizes.index((1, 2)), sizes
    shrink = state["resumes"][sizes.index((2, 1))]
    assert killed_at - shrink["step"] <= CHECKPOINT_EVERY, (killed_at, shrink)
    report_cost(client, result["run_id"], killed_at, kill_time, shrink["step"])
    assert state["world_size"] == 2 and len({r["node_id"] for r in state["ranks"]}) == 2
    # the global batch never changed: 2 clips x 1 step x 2 workers, or 2 clips x 2 steps x 1 worker
    assert state["global_batch_size"] == 4 and state["samples_seen"] == 4 * steps
    assert shrunk_at < steps
    assert [s for s, _ in history(client, result["run_id"], "loss")] == list(range(1, steps + 1))
    assert_no_duplicate_steps(client, result["run_id"])
