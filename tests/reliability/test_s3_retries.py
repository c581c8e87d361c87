"""S3 retries under injected connection resets: against a server that resets every connection, every client
the platform builds retries ``storage.max_attempts`` times, including the pyarrow filesystem Ray pickles to its
Train controller, workers and Ray Data tasks (pyarrow drops a plain S3FileSystem's retry strategy when pickling
it). How a lost connection reads (one line) is checked without a server in tests/unit/test_storage.py."""

from __future__ import annotations

import pickle
import socket
import struct
import threading

import pytest
from botocore.exceptions import BotoCoreError

from asva_platform.storage import Storage

pytestmark = pytest.mark.integration  # a real (if tiny) TCP server; no `slow`: `make test` runs it


class ResettingServer:
    """Accepts each connection, reads the request and resets it: every request attempt is one accept."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(2)
            try:
                conn.recv(65536)  # the request arrives first: every attempt fails the same way (no response)
            except OSError:
                pass
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server():
    s = ResettingServer()
    yield s
    s.close()


@pytest.mark.parametrize("pickled", [False, True], ids=["built", "unpickled"])
def test_pyarrow_filesystem_retries_as_configured_even_after_pickling(server, pickled):
    fs, path = Storage(server.url, "us-east-1", max_attempts=4).filesystem("s3://bucket/some/key")
    if pickled:
        fs = pickle.loads(pickle.dumps(fs))
    with pytest.raises(OSError):
        fs.get_file_info(path)
    assert server.accepted == 4


def test_boto3_client_retries_as_configured(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    connections = {}
    for attempts in (2, 5):
        server = ResettingServer()
        with pytest.raises(BotoCoreError):
            Storage(server.url, "us-east-1", max_attempts=attempts).client.head_object(
                Bucket="bucket", Key="k"
            )
        connections[attempts] = server.accepted
        server.close()
    # botocore reconnects once more on its own after a dropped connection; every attempt adds one
    assert connections[5] - connections[2] == 3, connections
