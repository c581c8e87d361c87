"""The local stack: a disk-backed S3 server (SeaweedFS), an MLflow tracking server and a Ray head, all bound to
127.0.0.1, Ray with token auth and S3 with a key of its own.

``asva stack up|down|status|env`` (and ``make stack-up``/``stack-down``) drive it. Every start is
idempotent: a second ``up`` finds the running service through its health check. Everything the stack keeps
lives under one state directory (default ``.asva/`` in the repo) and survives ``down`` / ``up``:

* ``s3/``: the S3 server's objects and metadata, its access key (``s3/credentials``, 0600) and ports;
* ``mlflow/mlflow.db``: MLflow's runs (their artifacts are objects in the S3 server's bucket);
* ``ray/auth_token`` (0600): the token every Ray client must present;
* ``stack.json`` (what this stack started, and so what ``down`` stops) and ``logs/``.

``down`` stops only the processes this stack started (the Ray head runs with its own ``--temp-dir`` so its
processes can be told apart from any other Ray on the machine; ``ray stop`` would kill them all). The start
functions (:mod:`.s3_server`, :mod:`.ray_local`, :func:`start_mlflow_server`) serve the test fixtures too.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

import requests

from asva_platform.dev.ray_local import (
    dashboard_healthy,
    ensure_token,
    private_ray_env,
    ray_temp_dir,
    start_ray_head,
    start_ray_worker_node,
    stop_ray_head,
)
from asva_platform.dev.s3_server import S3Service, client_env, s3_healthy, start_s3_server
from asva_platform.dev.services import (
    HOST,
    Service,
    StackError,
    bin_path,
    free_port,
    kill_tree,
    port_open,
    spawn,
    wait_until,
    with_env,
)
from asva_platform.storage import DEFAULT_BUCKET, DEFAULT_S3_PORT
from asva_platform.tracking import DEFAULT_MLFLOW_PORT

DEFAULT_RAY_PORT = 6390
DEFAULT_DASHBOARD_PORT = 8265


# ---------------------------------------------------------------------------------------------
# MLflow


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
    env = with_env(dict(os.environ), s3.env, {"MLFLOW_S3_ENDPOINT_URL": s3.url})
    cmd = [
        bin_path("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_uri,
        "--workers",
        "1",
    ]
    log = workdir / "mlflow.log"
    proc = spawn(cmd, log, env)
    wait_until(lambda: mlflow_healthy(url), 240, f"MLflow server on port {port}", proc, log)
    service.pid, service.started_here, service._proc = proc.pid, True, proc
    return service


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

    @property
    def s3_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def ray_token(self) -> Path:
        return self.state_dir / "ray" / "auth_token"

    def client_env(self) -> dict[str, str]:
        """What a job, a driver or a CLI needs to use this stack: the S3 endpoint and credentials file, the
        MLflow URI, the Ray GCS address (``ray.init``, ``python -m jobs.*``), the job server's URL (``ray job``,
        ``asva submit``), token auth and the loopback switch. An empty value means "unset this variable"
        (credentials in the environment would take precedence over the stack's files)."""
        return {
            **client_env(self.s3_url, self.s3_dir / "credentials"),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "RAY_ADDRESS": f"{HOST}:{self.ray_port}",
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            **private_ray_env(self.ray_token.resolve()),
        }

    def shell_env(self) -> str:
        """:meth:`client_env` as shell lines (``eval $(asva stack env)``): exports, then one ``unset``. Paths
        only, never a secret."""
        env = self.client_env()
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items() if v]
        unset = [k for k, v in env.items() if not v]
        return "\n".join(lines + ([f"unset {' '.join(unset)}"] if unset else []))


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
    s3 = start_s3_server(settings.s3_dir, settings.s3_port, settings.bucket, log_dir=logs)
    log(
        f"s3      {'started' if s3.started_here else 'running'}  {s3.url}  (bucket {settings.bucket}, data in "
        f"{settings.s3_dir})"
    )
    state["s3"] = _record(s3, state.get("s3"))
    _save_state(settings, state)

    ml = start_mlflow_server(
        settings.state_dir / "mlflow", f"s3://{settings.bucket}/mlartifacts", s3, port=settings.mlflow_port
    )
    log(f"mlflow  {'started' if ml.started_here else 'running'}  {ml.url}")
    state["mlflow"] = _record(ml, state.get("mlflow"))
    _save_state(settings, state)

    token = ensure_token(settings.ray_token)
    node_env = with_env(s3.env, {"MLFLOW_TRACKING_URI": ml.url})
    ray_svc = start_ray_head(
        settings.state_dir,
        token,
        settings.ray_port,
        settings.dashboard_port,
        settings.ray_num_cpus,
        extra_env=node_env,
    )
    log(
        f"ray     {'started' if ray_svc.started_here else 'running'}  {ray_svc.address}  dashboard {ray_svc.url}"
        "  (token auth)"
    )
    state["ray"] = _record(ray_svc, state.get("ray"))
    if ray_svc.started_here:
        for index in range(1, settings.ray_nodes):
            start_ray_worker_node(ray_svc, index, settings.ray_num_cpus, logs, extra_env=node_env)
        if settings.ray_nodes > 1:
            log(
                f"ray     {settings.ray_nodes} nodes of {settings.ray_num_cpus} CPUs (resources asva_node_0.."
                f"asva_node_{settings.ray_nodes - 1})"
            )
        state["ray"]["nodes"] = settings.ray_nodes
    _save_state(settings, state)
    return state


def status(settings: StackSettings) -> dict[str, bool]:
    return {
        "s3": s3_healthy(settings.s3_url),
        "mlflow": mlflow_healthy(settings.mlflow_url),
        "ray": dashboard_healthy(settings.dashboard_url) and port_open(settings.ray_port),
    }


def down(settings: StackSettings, log=print) -> None:
    """Stop the services this stack started (recorded in its state file); leave anything else alone. What they
    stored stays under the state directory for the next ``up``."""
    state = _load_state(settings)
    ray_rec = state.get("ray")
    if ray_rec and ray_rec.get("started_here"):
        n = stop_ray_head(
            ray_rec.get("temp_dir") or ray_temp_dir(settings.state_dir),
            f"{HOST}:{ray_rec.get('port', settings.ray_port)}",
        )
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
