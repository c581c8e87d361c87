"""What every local service shares: loopback ports, starting a server process in its own session, waiting for
its health check, stopping it with its children, and environment changes that are undone afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from asva_model.errors import AsvaError

HOST = "127.0.0.1"
"""Every listener of the local stack binds this address: nothing of it is reachable from another machine."""


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


@contextmanager
def env_applied(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment for the block (an empty value unsets the variable), then undone."""
    with restored_env(env):
        apply_env(os.environ, env)
        yield


def apply_env(target, env: dict[str, str]) -> None:
    """Update an environment mapping with ``env``; an empty value removes the variable (a client env says
    "not this one" that way, e.g. credentials that would take precedence over a credentials file)."""
    for k, v in env.items():
        if v:
            target[k] = v
        else:
            target.pop(k, None)


def with_env(base: dict[str, str], *envs: dict[str, str]) -> dict[str, str]:
    """A copy of ``base`` with each of ``envs`` applied in turn (see :func:`apply_env`)."""
    out = dict(base)
    for env in envs:
        apply_env(out, env)
    return out


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together while chosen, so none is picked twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(
    check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting. Log tail:\n{tail}")
        time.sleep(0.25)
    raise StackError(
        f"{what} did not become healthy within {timeout:.0f}s" + (f" (log: {log})" if log else "")
    )


def bin_path(name: str) -> str:
    """A console script of this venv (works when the venv is not activated)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


def spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session: the service outlives the CLI that started it and gets its own process group.
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process and its descendants, SIGKILL what is left after ``timeout``."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
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


def write_private(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (0600 from creation on, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


@dataclass
class Service:
    name: str
    port: int
    url: str
    pid: int = 0
    started_here: bool = False
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def stop(self) -> None:
        if self.started_here and self.pid:
            kill_tree(self.pid)
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
