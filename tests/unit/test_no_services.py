"""The guard of the service-free tiers (tests/service_guard.py, used by tests/unit and tests/learning) refuses
every way of starting a service, before it starts."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading

import pytest

from tests import service_guard as guard


@contextlib.contextmanager
def refused(match: str):
    """The guard fails the test with its one line; the attempt is taken off the record so this test passes."""
    before = len(guard.attempts)
    with pytest.raises(pytest.fail.Exception, match=match) as info:
        yield
    assert "move this test to tests/integration" in str(info.value)
    assert len(guard.attempts) == before + 1
    del guard.attempts[before:]


def test_a_listening_tcp_socket_is_refused():
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as s:
            try:
                s.bind((host, 0))
            except OSError:  # no IPv6 on this machine
                continue
            with refused("a listening TCP socket"):
                s.listen(1)


def test_a_unix_socket_and_a_plain_bind_stay_allowed(tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        s.listen(1)
    with socket.socket() as s:  # finding a free port is not serving on it
        s.bind(("127.0.0.1", 0))


def test_an_in_process_http_server_is_refused():
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    with refused("a listening TCP socket"):
        HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)


def test_ray_init_is_refused_before_anything_starts():
    import ray

    up_before = ray.is_initialized()  # in a full run the integration tier's session Ray may be up already
    with refused("ray.init"):
        ray.init(address="local", num_cpus=1, include_dashboard=False)
    assert ray.is_initialized() == up_before


@pytest.mark.parametrize(
    "cmd, name",
    [
        ([sys.executable, "-m", "moto.server", "-p", "0"], "moto server"),
        (["/opt/venv/bin/weed", "-logdir=/tmp", "mini", "-dir=/tmp/x"], "weed S3 server"),
        (
            [sys.executable, "-m", "asva_platform.dev.ray_loopback_node", "start", "--address=127.0.0.1:1"],
            "ray start",
        ),
        (["/opt/venv/bin/mlflow", "server", "--port", "0"], "mlflow server"),
        ([sys.executable, "-m", "mlflow", "server"], "mlflow server"),
        (["ray", "start", "--head"], "ray start"),
        ("ray start --head", "ray start"),
    ],
)
def test_server_processes_are_refused_before_they_spawn(cmd, name):
    with refused(f"a {name} process"):
        subprocess.Popen(cmd, shell=isinstance(cmd, str))


def test_other_processes_stay_allowed():
    out = subprocess.run(
        [sys.executable, "-c", "print('mlflow', 'ray')"], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["mlflow", "ray"]


@pytest.mark.parametrize("fixture", ["s3_server", "mlflow_server", "ray_cluster"])
def test_service_fixtures_fail_in_unit_tests(request, fixture):
    match = f"the {fixture} fixture: unit and learning tests start no service"
    with pytest.raises(pytest.fail.Exception, match=match):
        request.getfixturevalue(fixture)


def test_an_attempt_swallowed_in_a_thread_is_still_recorded():
    before = len(guard.attempts)

    def serve():
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                s.listen(1)
        except BaseException:  # noqa: BLE001 - what careless server code does
            pass

    t = threading.Thread(target=serve)
    t.start()
    t.join()
    assert len(guard.attempts) == before + 1 and guard.attempts[-1].startswith("a listening TCP socket")
    del guard.attempts[before:]  # otherwise this test would fail at teardown, as intended for real tests
