"""Ray on this machine, reachable from it alone and only with this stack's token.

* **Loopback.** Ray turns a node address of 127.0.0.1 into the host's outward address, and its servers then
  bind that one or every interface. With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (:data:`LOOPBACK_ENV`: Ray's
  switch for single-machine clusters) it keeps 127.0.0.1, and the GCS, raylets, object managers, dashboard,
  agents, the Ray Client server and every worker bind 127.0.0.1. Clients need the same switch, or they too
  rewrite 127.0.0.1 and knock on the outward address, where nothing listens. The switch also refuses to
  start worker nodes, so those start through :mod:`asva_platform.dev.ray_loopback_node`.
* **Token auth.** ``RAY_AUTH_MODE=token`` with a token generated once, 0600, found through
  ``RAY_AUTH_TOKEN_PATH``: the GCS, the dashboard and its job API refuse every request without it.
* **Its own processes.** Each head runs in its own ``--temp-dir``, which every process of it names on its
  command line, so stopping it never touches another Ray on the machine (``ray stop`` would stop them all).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from asva_platform.cluster import RUNTIME_DEFAULT_ENV
from asva_platform.dev.services import (
    HOST,
    Service,
    StackError,
    apply_env,
    bin_path,
    free_ports,
    port_open,
    wait_until,
    with_env,
    write_private,
)

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
NODE_RESOURCE = "asva_node_{index}"
"""A custom resource each node of a local multi-node cluster carries (one unit), so work can be placed on a
named node: ``{"asva_node_1": 0.01}``. Node 0 is the head."""


def ensure_token(path: Path) -> Path:
    """The Ray auth token at ``path``: generated (0600) the first time, then kept."""
    if not path.exists() or not path.read_text().strip():
        write_private(path, secrets.token_hex(32))
    return path.resolve()


def auth_env(token: Path) -> dict[str, str]:
    """Token auth with the token in ``token`` (a RAY_AUTH_TOKEN in the environment would take precedence over
    the file, so it is unset)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_TOKEN": ""}


def private_ray_env(token: Path) -> dict[str, str]:
    """Loopback and token auth: what every node, driver and CLI of a cluster of this machine's needs."""
    return {**LOOPBACK_ENV, **auth_env(token)}


def use_private_local_ray(token: Path | None = None) -> Path:
    """Make the Ray this process starts (``ray.init(address="local")``: tests, benchmarks) bind 127.0.0.1 and
    require a token, as the stack's does; returns the token file (new, in a temporary directory, unless given).
    Ray reads the loopback switch when it is imported: if it already is, its constant is set too."""
    token = ensure_token(token or Path(tempfile.mkdtemp(prefix="asva-ray-token-")) / "auth_token")
    apply_env(os.environ, private_ray_env(token))
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    return token


def ray_env(token: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a Ray node of this stack (and so of every job and worker it runs)."""
    env = with_env(dict(os.environ), private_ray_env(token), extra_env or {})
    # Job entrypoints run `python ...` through the raylet's PATH: make that this environment's python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key, value in RUNTIME_DEFAULT_ENV.items():
        env.setdefault(key, value)
    env.setdefault("DS_ACCELERATOR", "cpu")
    return env


@dataclass
class RayService(Service):
    temp_dir: str = ""
    token: str = ""
    """The auth token file of this cluster."""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return self.url

    def client_env(self) -> dict[str, str]:
        """What a driver, the ``ray`` CLI or the job SDK needs to reach this cluster."""
        return {
            **private_ray_env(Path(self.token)),
            "RAY_ADDRESS": self.address,
            "RAY_API_SERVER_ADDRESS": self.url,
        }


def ray_temp_dir(state_dir: Path) -> str:
    # Ray puts unix sockets under its temp dir; keep the path short (sockets are limited to ~107 chars).
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return f"/tmp/asva-ray-{digest}"


def dashboard_healthy(url: str) -> bool:
    # /api/version answers 401 without the token once the dashboard is up: an answer is enough here
    try:
        return requests.get(f"{url}/api/version", timeout=1).status_code in (200, 401)
    except requests.RequestException:
        return False


def _ray_start(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    """Run one ``ray start`` command with its output appended to ``log``; a failure is one StackError line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise StackError(f"{what} failed (exit {rc}); see {log}")


def _resources_arg(index: int) -> list[str]:
    return ["--resources", json.dumps({NODE_RESOURCE.format(index=index): 1})]


def _agent_ports() -> list[str]:
    # Ray's agents default to fixed ports (e.g. 52365); another Ray on this machine (a test cluster, a
    # colleague's) would hold them and the job agent would never come up. Take free ones.
    ports = free_ports(4)
    return [
        "--dashboard-agent-listen-port",
        str(ports[0]),
        "--dashboard-agent-grpc-port",
        str(ports[1]),
        "--runtime-env-agent-port",
        str(ports[2]),
        "--metrics-export-port",
        str(ports[3]),
    ]


def start_ray_head(
    state_dir: Path,
    token: Path,
    port: int = 0,
    dashboard_port: int = 0,
    num_cpus: int = 4,
    extra_env: dict[str, str] | None = None,
) -> RayService:
    """``ray start --head`` on 127.0.0.1 with token auth (``token``: see :func:`ensure_token`), the dashboard
    and job server, in this stack's own temp dir; the head carries the resource ``asva_node_0``."""
    port, dashboard_port = port or free_ports(1)[0], dashboard_port or free_ports(1)[0]
    url = f"http://{HOST}:{dashboard_port}"
    temp_dir = ray_temp_dir(state_dir)
    service = RayService("ray", port, url, temp_dir=temp_dir, token=str(token))
    if dashboard_healthy(url) and port_open(port):
        return service
    cmd = [
        bin_path("ray"),
        "start",
        "--head",
        "--node-ip-address",
        HOST,
        "--port",
        str(port),
        "--dashboard-host",
        HOST,
        "--dashboard-port",
        str(dashboard_port),
        "--num-cpus",
        str(num_cpus),
        "--temp-dir",
        temp_dir,
        "--disable-usage-stats",
        *_resources_arg(0),
        *_agent_ports(),
        "--ray-client-server-port",
        str(free_ports(1)[0]),
    ]
    log = state_dir / "logs" / "ray-start.log"
    _ray_start(cmd, ray_env(token, extra_env), log, "`ray start --head`")
    wait_until(lambda: dashboard_healthy(url), 120, "Ray dashboard", log=log)
    service.started_here = True
    return service


@dataclass
class RayNode:
    """A worker node started by :func:`start_ray_worker_node`."""

    index: int
    node_manager_port: int
    """Its raylet's port: what tells its processes apart from the other nodes' on this machine."""


def start_ray_worker_node(
    head: RayService, index: int, num_cpus: int, log_dir: Path, extra_env: dict[str, str] | None = None
) -> RayNode:
    """``ray start --address=<head>``: one more raylet on this machine, as a separate node with its own ports,
    ``num_cpus`` CPUs and the resource ``asva_node_<index>``, on loopback with the head's token. It joins the
    head's session, so stopping the head's instance (:func:`stop_ray_head`) stops it too."""
    low = 20000 + 1000 * index  # raylets on one machine must not hand out the same worker ports
    manager, objects = free_ports(2)
    node = RayNode(index, manager)
    cmd = [
        sys.executable,
        "-m",
        "asva_platform.dev.ray_loopback_node",
        "start",
        f"--address={head.address}",
        "--num-cpus",
        str(num_cpus),
        *_resources_arg(index),
        "--disable-usage-stats",
        "--node-manager-port",
        str(manager),
        "--object-manager-port",
        str(objects),
        *_agent_ports(),
        "--min-worker-port",
        str(low),
        "--max-worker-port",
        str(low + 999),
    ]
    _ray_start(
        cmd,
        ray_env(Path(head.token), extra_env),
        log_dir / f"ray-node-{index}.log",
        f"`ray start --address={head.address}` (node {index})",
    )
    return node


def kill_ray_node(node: RayNode) -> list[int]:
    """SIGKILL a worker node's raylet and every process under it (its workers and agents) at once, as a
    machine that is lost: nothing is told, nothing shuts down cleanly. Returns the pids killed."""
    import psutil

    flag = f"--node_manager_port={node.node_manager_port}"
    raylets = [p for p in psutil.process_iter(["cmdline"]) if flag in (p.info["cmdline"] or [])]
    doomed = {p.pid: p for r in raylets for p in [r, *r.children(recursive=True)]}
    for p in doomed.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return sorted(doomed)


def ray_processes(temp_dir: str, gcs_address: str = ""):
    """The processes of the Ray instance that runs in ``temp_dir`` (and nothing else). The Ray Client server
    is the one that does not name the temp dir: it is known by the GCS address it serves."""
    import psutil

    client_flag = f"--address={gcs_address}" if gcs_address else None
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = p.info["cmdline"] or []
            if p.info["pid"] == os.getpid():
                continue
            if any(temp_dir in part for part in cmdline) or (
                client_flag and "ray.util.client.server" in cmdline and client_flag in cmdline
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_ray_head(temp_dir: str, gcs_address: str = "", timeout: float = 3.0) -> int:
    """Stop every process of the Ray instance in ``temp_dir`` (and their children: workers, job drivers);
    returns how many there were. SIGTERM, then SIGKILL after ``timeout``: the raylet takes 10 s to exit on
    SIGTERM and the GCS does not exit at all, and neither keeps anything a clean exit would save."""
    import psutil

    procs = ray_processes(temp_dir, gcs_address)
    everything = {p.pid: p for p in procs}
    for p in procs:
        try:
            for c in p.children(recursive=True):
                everything[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    for p in everything.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(everything.values()), timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return len(everything)
