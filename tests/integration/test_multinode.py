"""Training on a real two-node Ray cluster on this machine: a `ray start --head` node and a `ray start
--address=...` node, separate raylets with their own ports, CPUs and a custom resource each (as
`asva stack up --nodes 2` starts them). `jobs.train` runs as users run it, pointed at the cluster by
RAY_ADDRESS; `train.placement_strategy=STRICT_SPREAD` puts its two workers on different nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asva_platform.dev import stack
from tests.train_helpers import FAST, TINY, assert_no_duplicate_steps, history, mlflow_client, trainer_state

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _alive_nodes(address: str) -> list[dict]:
    code = (f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


@pytest.fixture(scope="module")
def two_nodes(s3_server, mlflow_server, tmp_path_factory):
    state = tmp_path_factory.mktemp("ray-two-nodes")
    env = s3_server.env | {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    head = stack.start_ray_head(state, port=stack.free_port(), dashboard_port=stack.free_port(), num_cpus=2,
                                extra_env=env)
    try:
        stack.start_ray_worker_node(head, 1, 2, state / "logs", extra_env=env)
        deadline = time.time() + 60
        while len(nodes := _alive_nodes(head.address)) < 2 and time.time() < deadline:
            time.sleep(1)
        resources = sorted(r for n in nodes for r in n["Resources"] if r.startswith("asva_node_"))
        assert resources == ["asva_node_0", "asva_node_1"], nodes
        yield head
    finally:
        stack.stop_ray_head(head.temp_dir)


def _train(two_nodes, train_inputs, mlflow_server, s3_server, *extra: str) -> dict:
    overrides, _, _ = train_inputs
    env = dict(os.environ, **s3_server.env, MLFLOW_TRACKING_URI=mlflow_server.uri, RAY_ADDRESS=two_nodes.address,
               RAY_AUTH_MODE="disabled", DS_ACCELERATOR="cpu")
    cmd = [sys.executable, "-m", "jobs.train", "--config", TINY, "--json", *overrides, *FAST,
           "train.placement_strategy=STRICT_SPREAD", "train.num_workers=2", "train.cpus_per_worker=1",
           "train.validate_every=0", "train.export=false", "train.checkpoint_every=2", *extra]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ZeRO-3 (per-rank weight shards too) in the default `make test`; ZeRO-2 with `make test-all`.
@pytest.mark.parametrize("stage", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_training_spreads_over_two_nodes_and_resumes_there(stage, two_nodes, train_inputs, mlflow_server,
                                                           s3_server):
    _, _, storage = train_inputs
    name = f"multinode-zero{stage}"
    first = _train(two_nodes, train_inputs, mlflow_server, s3_server, f"name={name}", f"train.zero_stage={stage}",
                   "train.max_steps=2")
    state = trainer_state(storage, first["checkpoint_uri"])
    ranks = state["extra"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["node_id"] for r in ranks}) == 2  # one rank per node
    names = {Path(u).name for u in storage.list(first["checkpoint_uri"])}
    for rank in (0, 1):  # each rank wrote its own shard, from its own node, to S3
        assert any(n.endswith(f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt") for n in names), names
    client = mlflow_client(mlflow_server)
    tag = client.get_run(first["run_id"]).data.tags["asva.rank_nodes"]
    assert tag == ",".join(f"{r['rank']}:{r['node_id'][:8]}" for r in ranks)

    again = _train(two_nodes, train_inputs, mlflow_server, s3_server, f"name={name}", f"train.zero_stage={stage}",
                   "train.max_steps=4")
    assert again["run_id"] == first["run_id"] and again["final_step"] == 4
    resumed = trainer_state(storage, again["checkpoint_uri"])
    assert [r["step"] for r in resumed["extra"]["resumes"]] == [2]
    assert len({r["node_id"] for r in resumed["extra"]["ranks"]}) == 2
    assert [s for s, _ in history(client, first["run_id"], "loss")] == [2, 4]
    assert_no_duplicate_steps(client, first["run_id"])
