"""The local stack: an S3-protocol server (moto), an MLflow tracking server and a Ray head, on 127.0.0.1.

``asva stack up|down|status`` (and ``make stack-up``/``stack-down``) drive it. Every start is
idempotent: a second ``up`` finds the running service through its health check. PIDs, ports and logs
live under one state directory (default ``.asva/`` in the repo); ``down`` stops only the processes this
stack started (the Ray head runs with its own ``--temp-dir`` so its processes can be told apart from any
other Ray on the machine; ``ray stop`` would kill them all).

The same start functions serve the test fixtures (ephemeral ports, a temporary state directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import requests

from asva_model.errors import AsvaError
from asva_platform.storage import DEFAULT_BUCKET, DEFAULT_S3_PORT, Storage
from asva_platform.tracking import DEFAULT_MLFLOW_PORT

HOST = "127.0.0.1"
DEFAULT_RAY_PORT = 6390
DEFAULT_DASHBOARD_PORT = 8265
# moto accepts any credentials; these dummies are used only when none are set and the endpoint is local.
LOCAL_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class StackError(AsvaError):
    pass


@contextmanager
def restored_env(keys: Iterable[str]) -> Iterator[None]:
    """Whatever the block does to these environment variables is undone at its end (unset ones unset again)."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting. Log tail:\n{tail}")
        time.sleep(0.25)
    raise StackError(f"{what} did not become healthy within {timeout:.0f}s" + (f" (log: {log})" if log else ""))


def _bin(name: str) -> str:
    """A console script of this venv (works when the venv is not activated)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    # A new session: the service outlives the CLI that started it and gets its own process group.
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


# ---------------------------------------------------------------------------------------------
# Services


@dataclass
class Service:
    name: str
    port: int
    url: str
    pid: int = 0
    started_here: bool = False
    extra: dict = field(default_factory=dict)
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def stop(self) -> None:
        if self.started_here and self.pid:
            kill_tree(self.pid)
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process and its descendants, SIGKILL what is left after ``timeout``."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@dataclass
class S3Service(Service):
    bucket: str = DEFAULT_BUCKET

    @property
    def env(self) -> dict[str, str]:
        """Client env for this server: endpoint, region and (dummy, moto-only) credentials."""
        env = {"AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        for k, v in LOCAL_S3_CREDENTIALS.items():
            env[k] = os.environ.get(k, v)
        return env


def _s3_healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/moto-api/data.json", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def start_s3_server(port: int = 0, bucket: str = DEFAULT_BUCKET, log_dir: Path | None = None) -> S3Service:
    """Start moto's standalone S3 server on 127.0.0.1 (or find one running there) and create ``bucket``."""
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    service = S3Service("s3", port, url, bucket=bucket)
    if not _s3_healthy(url):
        if port_open(port):
            raise StackError(f"port {port} is taken by something that is not an S3 server")
        log = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"moto-{port}.log"
        proc = _spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], log, dict(os.environ))
        wait_until(lambda: _s3_healthy(url), 120, f"S3 server on port {port}", proc, log)
        service.pid, service.started_here, service._proc = proc.pid, True, proc

    with restored_env(service.env):
        os.environ.update({k: v for k, v in service.env.items() if k != "AWS_ENDPOINT_URL" and not os.environ.get(k)})
        Storage(url).ensure_bucket(f"s3://{bucket}")
    return service


@dataclass
class MlflowService(Service):
    @property
    def uri(self) -> str:
        return self.url


def mlflow_healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def start_mlflow_server(workdir: Path, artifacts_uri: str, s3: S3Service, port: int = 0) -> MlflowService:
    """Start ``mlflow server`` with a sqlite backend store and its artifact root in the S3 server's bucket."""
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    service = MlflowService("mlflow", port, url)
    if mlflow_healthy(url):
        return service
    if port_open(port):
        raise StackError(f"port {port} is taken by something that is not an MLflow server")
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(s3.env)
    env["MLFLOW_S3_ENDPOINT_URL"] = s3.url
    cmd = [
        _bin("mlflow"), "server",
        "--host", HOST, "--port", str(port),
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", artifacts_uri,
        "--workers", "1",
    ]
    log = workdir / "mlflow.log"
    proc = _spawn(cmd, log, env)
    wait_until(lambda: mlflow_healthy(url), 240, f"MLflow server on port {port}", proc, log)
    service.pid, service.started_here, service._proc = proc.pid, True, proc
    return service


@dataclass
class RayService(Service):
    temp_dir: str = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return self.url


def ray_temp_dir(state_dir: Path) -> str:
    # Ray puts unix sockets under its temp dir; keep the path short (sockets are limited to ~107 chars).
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return f"/tmp/asva-ray-{digest}"


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    # Job entrypoints run `python ...` through the raylet's PATH: make that this environment's python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only cluster; see README (Ray 2.60 token auth)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def _dashboard_healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/version", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _ray_start(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    """Run one ``ray start`` command with its output appended to ``log``; a failure is one StackError line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise StackError(f"{what} failed (exit {rc}); see {log}")


def start_ray_head(state_dir: Path, port: int = DEFAULT_RAY_PORT, dashboard_port: int = DEFAULT_DASHBOARD_PORT,
                   num_cpus: int = 4, extra_env: dict[str, str] | None = None) -> RayService:
    """``ray start --head`` on 127.0.0.1 with the dashboard/job server, in this stack's own temp dir; the head
    carries the resource ``asva_node_0``."""
    url = f"http://{HOST}:{dashboard_port}"
    temp_dir = ray_temp_dir(state_dir)
    service = RayService("ray", port, url, temp_dir=temp_dir)
    if _dashboard_healthy(url) and port_open(port):
        return service
    env = ray_env()
    env.update(extra_env or {})
    cmd = [
        _bin("ray"), "start", "--head",
        "--node-ip-address", HOST, "--port", str(port),
        "--dashboard-host", HOST, "--dashboard-port", str(dashboard_port),
        "--num-cpus", str(num_cpus), "--temp-dir", temp_dir, "--disable-usage-stats", *_resources_arg(0),
        # Ray's agents default to fixed ports (e.g. 52365); another Ray on this machine (a test cluster, a
        # colleague's) would hold them and the job agent would never come up. Take free ones.
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
    ]
    log = state_dir / "logs" / "ray-start.log"
    _ray_start(cmd, env, log, "`ray start --head`")
    wait_until(lambda: _dashboard_healthy(url), 120, "Ray dashboard", log=log)
    service.started_here = True
    return service


NODE_RESOURCE = "asva_node_{index}"
"""A custom resource each node of a local multi-node cluster carries (one unit), so work can be placed on a
named node: ``{"asva_node_1": 0.01}``. Node 0 is the head."""


def _resources_arg(index: int) -> list[str]:
    return ["--resources", json.dumps({NODE_RESOURCE.format(index=index): 1})]


@dataclass
class RayNode:
    """A worker node started by :func:`start_ray_worker_node`."""

    index: int
    node_manager_port: int
    """Its raylet's port: what tells its processes apart from the other nodes' on this machine."""


def start_ray_worker_node(head: RayService, index: int, num_cpus: int, log_dir: Path,
                          extra_env: dict[str, str] | None = None) -> RayNode:
    """``ray start --address=<head>``: one more raylet on this machine, as a separate node with its own ports,
    ``num_cpus`` CPUs and the resource ``asva_node_<index>``. It joins the head's session, so stopping the
    head's instance (:func:`stop_ray_head`) stops it too."""
    env = ray_env()
    env.update(extra_env or {})
    low = 20000 + 1000 * index  # raylets on one machine must not hand out the same worker ports
    node = RayNode(index, free_port())
    cmd = [
        _bin("ray"), "start", f"--address={head.address}", "--node-ip-address", HOST,
        "--num-cpus", str(num_cpus), *_resources_arg(index), "--disable-usage-stats",
        "--node-manager-port", str(node.node_manager_port), "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
        "--min-worker-port", str(low), "--max-worker-port", str(low + 999),
    ]
    _ray_start(cmd, env, log_dir / f"ray-node-{index}.log", f"`ray start --address={head.address}` (node {index})")
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


def ray_processes(temp_dir: str):
    """The processes of the Ray instance that runs in ``temp_dir`` (and nothing else)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] != os.getpid() and any(temp_dir in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_ray_head(temp_dir: str, timeout: float = 15.0) -> int:
    import psutil

    procs = ray_processes(temp_dir)
    # Workers and drivers of that instance are children of its raylet; take them too.
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


# ---------------------------------------------------------------------------------------------
# The stack as a whole


@dataclass
class StackSettings:
    state_dir: Path = Path(".asva")
    s3_port: int = DEFAULT_S3_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT
    ray_port: int = DEFAULT_RAY_PORT
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    ray_num_cpus: int = 4
    ray_nodes: int = 1
    """Ray nodes on this machine: the head plus ray_nodes - 1 worker nodes, each with ray_num_cpus CPUs."""
    bucket: str = DEFAULT_BUCKET

    @classmethod
    def from_env(cls, state_dir: str | None = None, environ: dict[str, str] | None = None) -> StackSettings:
        """Defaults, overridable with ASVA_STATE_DIR, ASVA_S3_PORT, ASVA_MLFLOW_PORT, ASVA_RAY_PORT,
        ASVA_DASHBOARD_PORT, ASVA_RAY_NUM_CPUS, ASVA_RAY_NODES, ASVA_BUCKET."""
        e = os.environ if environ is None else environ
        return cls(
            state_dir=Path(state_dir or e.get("ASVA_STATE_DIR", ".asva")),
            s3_port=int(e.get("ASVA_S3_PORT", DEFAULT_S3_PORT)),
            mlflow_port=int(e.get("ASVA_MLFLOW_PORT", DEFAULT_MLFLOW_PORT)),
            ray_port=int(e.get("ASVA_RAY_PORT", DEFAULT_RAY_PORT)),
            dashboard_port=int(e.get("ASVA_DASHBOARD_PORT", DEFAULT_DASHBOARD_PORT)),
            ray_num_cpus=int(e.get("ASVA_RAY_NUM_CPUS", 4)),
            ray_nodes=int(e.get("ASVA_RAY_NODES", 1)),
            bucket=e.get("ASVA_BUCKET", DEFAULT_BUCKET),
        )

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HOST}:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """What a job or CLI needs to use this stack (endpoint and URIs; dummy credentials for moto only)."""
        env = {
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "RAY_ADDRESS": self.dashboard_url,
            "RAY_AUTH_MODE": "disabled",
        }
        for k, v in LOCAL_S3_CREDENTIALS.items():
            env[k] = os.environ.get(k, v)
        return env


def _load_state(settings: StackSettings) -> dict:
    try:
        return json.loads(settings.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_state(settings: StackSettings, state: dict) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(settings.state_file)


def _record(svc: Service, previous: dict | None) -> dict:
    rec = {f.name: getattr(svc, f.name) for f in fields(svc) if not f.name.startswith("_")}
    # A service found running keeps the ownership recorded when it was started.
    if not svc.started_here and previous and previous.get("port") == svc.port:
        rec["started_here"] = previous.get("started_here", False)
        rec["pid"] = previous.get("pid", 0)
    return rec


def up(settings: StackSettings, log=print) -> dict:
    """Start (or find) the three services; returns the recorded state."""
    state = _load_state(settings)
    logs = settings.state_dir / "logs"
    s3 = start_s3_server(settings.s3_port, settings.bucket, log_dir=logs)
    log(f"s3      {'started' if s3.started_here else 'running'}  {s3.url}  (bucket {settings.bucket})")
    state["s3"] = _record(s3, state.get("s3"))
    _save_state(settings, state)

    ml = start_mlflow_server(settings.state_dir / "mlflow", f"s3://{settings.bucket}/mlartifacts", s3,
                             port=settings.mlflow_port)
    log(f"mlflow  {'started' if ml.started_here else 'running'}  {ml.url}")
    state["mlflow"] = _record(ml, state.get("mlflow"))
    _save_state(settings, state)

    ray_svc = start_ray_head(settings.state_dir, settings.ray_port, settings.dashboard_port, settings.ray_num_cpus,
                             extra_env=s3.env | {"MLFLOW_TRACKING_URI": ml.url})
    log(f"ray     {'started' if ray_svc.started_here else 'running'}  {ray_svc.address}  dashboard {ray_svc.url}")
    state["ray"] = _record(ray_svc, state.get("ray"))
    if ray_svc.started_here:
        for index in range(1, settings.ray_nodes):
            start_ray_worker_node(ray_svc, index, settings.ray_num_cpus, logs,
                                  extra_env=s3.env | {"MLFLOW_TRACKING_URI": ml.url})
        if settings.ray_nodes > 1:
            log(f"ray     {settings.ray_nodes} nodes of {settings.ray_num_cpus} CPUs (resources asva_node_0.."
                f"asva_node_{settings.ray_nodes - 1})")
        state["ray"]["nodes"] = settings.ray_nodes
    _save_state(settings, state)
    return state


def status(settings: StackSettings) -> dict[str, bool]:
    return {
        "s3": _s3_healthy(settings.s3_url),
        "mlflow": mlflow_healthy(settings.mlflow_url),
        "ray": _dashboard_healthy(settings.dashboard_url) and port_open(settings.ray_port),
    }


def down(settings: StackSettings, log=print) -> None:
    """Stop the services this stack started (recorded in its state file); leave anything else alone."""
    state = _load_state(settings)
    ray_rec = state.get("ray")
    if ray_rec and ray_rec.get("started_here"):
        n = stop_ray_head(ray_rec.get("temp_dir") or ray_temp_dir(settings.state_dir))
        log(f"ray     stopped ({n} processes)")
    for name in ("mlflow", "s3"):
        rec = state.get(name)
        if rec and rec.get("started_here") and rec.get("pid"):
            kill_tree(rec["pid"])
            log(f"{name:<7} stopped (pid {rec['pid']})")
    for name, rec in state.items():
        if rec and not rec.get("started_here"):
            log(f"{name:<7} left running (not started by this stack)")
    settings.state_file.unlink(missing_ok=True)
