"""A real multi-node Ray cluster on this machine for the tests: a `ray start --head` node and `ray start
--address=...` nodes, separate raylets with their own ports, CPUs and a custom resource each
(``asva_node_<i>``), as `asva stack up --nodes N` starts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asva_platform.dev import ray_local as stack

NODES_MARKER = "asva-alive-nodes:"
"""Prefixes the driver's JSON line: Ray may print its own lines (e.g. "raylet has lagging heartbeats") around it."""


def marked_json(stdout: str, marker: str = NODES_MARKER) -> list[dict]:
    """The JSON after the last ``marker`` in ``stdout`` (text Ray wrote after it on the same line ignored)."""
    _, found, rest = stdout.rpartition(marker)
    if not found:
        raise ValueError(f"no {marker!r} line in the driver's output: {stdout[-500:]!r}")
    return json.JSONDecoder().raw_decode(rest)[0]


def session_token() -> Path:
    """The test session's Ray auth token (conftest.py): the clusters tests start require it, as its drivers and
    CLI calls present it."""
    return Path(os.environ["RAY_AUTH_TOKEN_PATH"])


def alive_nodes(address: str) -> list[dict]:
    """``ray.nodes()`` of the cluster at ``address`` that are alive (asked from a short-lived driver)."""
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
        f"print({NODES_MARKER!r} + json.dumps([n for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return marked_json(out.stdout) if out.returncode == 0 else []


def node_resources(address: str) -> list[str]:
    """The ``asva_node_<i>`` resources of the alive nodes, sorted."""
    return sorted(r for n in alive_nodes(address) for r in n["Resources"] if r.startswith("asva_node_"))


def wait_for_nodes(address: str, expected: list[str], timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while (have := node_resources(address)) != expected and time.time() < deadline:
        time.sleep(1)
    assert have == expected, f"cluster nodes {have}, expected {expected}"


@contextmanager
def ray_cluster_of(
    state: Path, env: dict[str, str], workers: int = 1, cpus: int = 2
) -> Iterator[tuple[stack.RayService, list[stack.RayNode]]]:
    """A head plus ``workers`` worker nodes of ``cpus`` CPUs each; stopped (every node) on exit."""
    head = stack.start_ray_head(state, session_token(), num_cpus=cpus, extra_env=env)
    try:
        nodes = [
            stack.start_ray_worker_node(head, i, cpus, state / "logs", extra_env=env)
            for i in range(1, workers + 1)
        ]
        wait_for_nodes(head.address, [f"asva_node_{i}" for i in range(workers + 1)])
        yield head, nodes
    finally:
        stack.stop_ray_head(head.temp_dir, head.address)
