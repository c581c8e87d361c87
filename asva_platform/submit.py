"""Submitting the platform's stages as Ray jobs (the Ray Jobs SDK behind ``asva submit`` / ``asva jobs``).

``asva submit train --config configs/tiny.yaml train.lr=2e-4`` is the same as

    ray job submit --working-dir . -- python -m jobs.train --config configs/tiny.yaml train.lr=2e-4

plus: the job validates its own config and arguments here first (``python -m jobs.<stage> ... --check`` in a
subprocess, so this module never imports the job layer; nothing reaches the cluster if they are bad);
stage-specific flags go after ``--`` (``asva submit generate --config c.yaml -- --image s3://... --audio ...``);
the working dir is
packed without the venv/state/caches, the runtime env carries the S3 endpoint and MLflow URI from the
config (never credentials, never in the entrypoint string), and the git commit travels as
``ASVA_GIT_COMMIT`` (Ray's upload has no .git). The submission id becomes the MLflow tag
``asva.ray_submission_id`` of the run the job creates.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from asva_platform.cluster import SECRET_ENV, worker_env
from asva_platform.errors import UserError
from asva_platform.experiment import load_experiment
from asva_platform.tracking import git_commit

STAGES = ("preprocess", "train", "sweep", "evaluate", "generate")
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# Never uploaded with the working dir: environments, state, data and build outputs.
WORKING_DIR_EXCLUDES = [
    ".venv/",
    ".asva/",
    ".git/",
    "**/__pycache__/",
    "*.egg-info/",
    ".pytest_cache/",
    ".ruff_cache/",
    # Anchored with "/": an unanchored "data/" would also drop the package asva_model/data/.
    "/bench/results/",
    "/datasets/",
    "/data/",
    "/out/",
    "*.mp4",
    "*.pt",
    "*.pth",
    "*.safetensors",
    "*.bin",
    ".whl/",
    ".gl/",
]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def dashboard_address(address: str | None) -> str:
    addr = (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("RAY_ADDRESS")
        or DEFAULT_DASHBOARD
    )
    if addr == "auto" or addr.startswith("ray://"):
        raise UserError(f"job submission needs the dashboard URL (http://<head>:8265), got {addr!r}")
    return addr if "://" in addr else f"http://{addr}"


DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
"""Where Ray looks for the cluster token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""


def auth_headers() -> dict[str, str]:
    """The cluster's token as an HTTP header, when this process's environment turns token auth on
    (``RAY_AUTH_MODE=token``; the token from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``).

    Read from the environment at each call rather than left to Ray: Ray fixes its auth mode for the process the
    first time ray.train / ray.tune is imported, so a driver that imported them before it applied a cluster's
    env (``bench learn`` did) sent no token and was refused. The token is never printed."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE).expanduser()
    if not token and path.is_file():
        token = path.read_text().strip()
    if not token:
        raise UserError(
            f"RAY_AUTH_MODE=token but no token: set RAY_AUTH_TOKEN_PATH to the cluster's token file "
            f"({path} is missing or empty)"
        )
    return {"Authorization": f"Bearer {token}"}


def client(address: str | None = None):
    from ray.job_submission import JobSubmissionClient

    addr = dashboard_address(address)
    headers = auth_headers()
    try:
        return JobSubmissionClient(addr, headers=headers)
    except Exception as err:  # connection refused, auth mismatch...
        raise UserError(
            f"cannot reach the Ray job server at {addr}: {str(err).splitlines()[0][:200]}"
        ) from None


@dataclass
class Submission:
    stage: str
    entrypoint: str
    runtime_env: dict
    submission_id: str


def build_submission(
    stage: str,
    config_path: str,
    overrides: list[str],
    submission_id: str = "",
    working_dir: Path | None = None,
    flags: tuple[str, ...] = (),
) -> Submission:
    """Validate the config locally and build what gets submitted (no cluster contact)."""
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    working_dir = working_dir or repo_root()
    # Only what the submitter set explicitly (env or config) travels: a default must not override the
    # cluster's own MLflow URI / S3 endpoint.
    env = worker_env()
    if stage == "sweep":
        args = [config_path, *overrides, *flags]
    else:
        experiment = load_experiment(config_path, overrides)
        if experiment.storage.endpoint_url:
            env["AWS_ENDPOINT_URL"] = experiment.storage.endpoint_url
        args = ["--config", config_path, *overrides, *flags]
    check_job_args(stage, args, working_dir)

    commit = git_commit()
    if commit:
        env["ASVA_GIT_COMMIT"] = commit
    assert not any(k in env for k in SECRET_ENV)
    sub_id = submission_id or f"asva-{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    entrypoint = shlex.join(["python", "-m", f"jobs.{stage}", *args])
    runtime_env = {"working_dir": str(working_dir), "excludes": WORKING_DIR_EXCLUDES, "env_vars": env}
    return Submission(stage, entrypoint, runtime_env, sub_id)


def check_job_args(stage: str, args: list[str], working_dir: Path) -> None:
    """Run the job's own validation (``--check``: parse, load and validate the config, start nothing) in a
    subprocess, the way the cluster will run it; its one-line error becomes ours."""
    import subprocess

    cmd = [sys.executable, "-m", f"jobs.{stage}", *args, "--check"]
    proc = subprocess.run(cmd, cwd=working_dir, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        reason = last.split("error: ", 1)[-1]  # ours ("error: ...") and argparse's ("prog: error: ...")
        raise UserError(f"jobs.{stage} rejected its arguments, nothing submitted: {reason}")


def submit(
    sub: Submission, address: str | None = None, num_gpus: float = 0, agent_wait_s: float = 180
) -> str:
    c = client(address)
    kwargs = {"entrypoint_num_gpus": num_gpus} if num_gpus else {}
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return c.submit_job(
                entrypoint=sub.entrypoint,
                runtime_env=sub.runtime_env,
                submission_id=sub.submission_id,
                **kwargs,
            )
        except RuntimeError as err:
            # A freshly started head answers before its job agent has registered; that passes.
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def wait(
    job_id: str, address: str | None = None, follow: bool = False, timeout: float = 0, out=sys.stdout
) -> str:
    """Wait for a job to finish (optionally streaming its logs); returns the final status name."""
    c = client(address)
    start = time.monotonic()
    printed = 0
    while True:
        status = _status(c, job_id)
        if follow:
            logs = c.get_job_logs(job_id)
            if len(logs) > printed:
                out.write(logs[printed:])
                out.flush()
                printed = len(logs)
        if status in TERMINAL:
            return status
        if timeout and time.monotonic() - start > timeout:
            raise UserError(f"job {job_id} still {status} after {timeout:.0f}s")
        time.sleep(1.0)


_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_json_line(text: str) -> dict:
    """The JSON object a job printed last (the `--json` contract of every stage); {} if none. A job's log
    interleaves Ray Data's progress bars, whose cursor movements may sit on the same line as the object."""
    import json

    for line in reversed(text.strip().splitlines()):
        line = _TERMINAL_CONTROL.sub("", line).strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def list_jobs(address: str | None = None) -> list[dict]:
    rows = []
    for info in client(address).list_jobs():
        rows.append(
            {
                "submission_id": info.submission_id,
                "status": str(getattr(info.status, "value", info.status)),
                "entrypoint": info.entrypoint,
                "start_time": info.start_time,
            }
        )
    return sorted(rows, key=lambda r: r["start_time"] or 0)


def _status(c, job_id: str) -> str:
    s = c.get_job_status(job_id)
    return str(getattr(s, "value", s))


def job_status(job_id: str, address: str | None = None) -> str:
    return _status(client(address), job_id)


def job_logs(job_id: str, address: str | None = None) -> str:
    return client(address).get_job_logs(job_id)


def stop_job(job_id: str, address: str | None = None) -> bool:
    return client(address).stop_job(job_id)
