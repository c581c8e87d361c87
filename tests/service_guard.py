"""The service-free tiers (``tests/unit``, ``tests/learning``) start no service: no Ray, no S3 or MLflow server,
no listening TCP socket, no server process. Their conftest.py files import the fixtures below.

A test there that tries fails with one line saying where such a test belongs (``tests/integration``, or
``tests/reliability`` for fault injection). Checked for every test of those tiers:

* the session fixtures that start services (``s3_server``, ``mlflow_server``, ``ray_cluster``) fail at once;
* ``ray.init`` (also Ray's auto-init, which goes through it) raises before anything starts;
* ``socket.listen`` on an AF_INET/AF_INET6 socket raises (an in-process HTTP/moto/werkzeug server, a fake
  TCP server); AF_UNIX sockets (multiprocessing) stay allowed;
* ``subprocess.Popen`` of a server command (``weed``, ``-m moto.server``/``moto_server``, ``mlflow server|ui``,
  ``ray start``, also through ``-m asva_platform.dev.ray_loopback_node``) raises before the process is spawned.

A violation raised inside a thread or swallowed by the code under test is still reported: every attempt is
recorded, and the test that made it fails at teardown. Not covered: the rendezvous store of a one-process
``torch.distributed`` gloo group that DeepSpeed needs (in-process plumbing nothing else uses), and a Ray that
is already up (in a full run the integration tier's session Ray is; Ray's auto-init then calls nothing):
``make test-fast`` runs the unit tier alone, where any use of Ray goes through ``ray.init``.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

WHERE = (
    "unit and learning tests start no service: move this test to tests/integration "
    "(tests/reliability for fault injection)"
)

# Every attempt, in order; the per-test check reports the ones made during that test.
attempts: list[str] = []


def refuse(what: str) -> None:
    attempts.append(what)
    pytest.fail(f"{what}: {WHERE}", pytrace=False)


def server_command(args) -> str | None:
    """The server a command line would start, or None."""
    if isinstance(args, (str, bytes, os.PathLike)):
        argv = os.fsdecode(args).split()
    else:
        argv = [os.fsdecode(a) for a in args]
    names = [os.path.basename(a) for a in argv]
    for i, name in enumerate(names):
        if name in ("moto.server", "moto_server"):
            return "moto server"
        if name == "weed":
            return "weed S3 server"
        following = names[i + 1] if i + 1 < len(names) else ""
        if name == "mlflow" and following in ("server", "ui"):
            return f"mlflow {following}"
        if name in ("ray", "asva_platform.dev.ray_loopback_node") and following == "start":
            return "ray start"
    return None


@pytest.fixture(scope="module", autouse=True)
def no_services_started():
    """Module-scoped so that module fixtures (set up after this one) are covered too."""
    import ray
    import ray._private.worker

    original_listen = socket.socket.listen
    original_popen_init = subprocess.Popen.__init__

    def listen(self, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"a listening TCP socket ({self.getsockname()})")
        return original_listen(self, *args, **kwargs)

    def popen_init(self, *args, **kwargs):
        server = server_command(args[0] if args else kwargs.get("args", ()))
        if server:
            refuse(f"a {server} process")
        return original_popen_init(self, *args, **kwargs)

    def ray_init(*args, **kwargs):
        refuse("ray.init")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "listen", listen)
        mp.setattr(subprocess.Popen, "__init__", popen_init)
        mp.setattr(ray, "init", ray_init)
        mp.setattr(ray._private.worker, "init", ray_init)
        yield


@pytest.fixture(autouse=True)
def no_service_attempt_swallowed():
    """Fails the test if anything (a thread, an ``except BaseException``) swallowed a refused start."""
    before = len(attempts)
    yield
    if len(attempts) > before:
        pytest.fail(f"{'; '.join(attempts[before:])}: {WHERE}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server():
    pytest.fail(f"the s3_server fixture: {WHERE}", pytrace=False)


@pytest.fixture(scope="session")
def mlflow_server():
    pytest.fail(f"the mlflow_server fixture: {WHERE}", pytrace=False)


@pytest.fixture(scope="session")
def ray_cluster():
    pytest.fail(f"the ray_cluster fixture: {WHERE}", pytrace=False)
