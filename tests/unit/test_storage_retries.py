"""S3 retries: every client the platform builds retries ``storage.max_attempts`` times, including the pyarrow
filesystem Ray pickles to its Train controller, workers and Ray Data tasks (pyarrow drops a plain
S3FileSystem's retry strategy when pickling it), and a lost connection deep inside a Ray error reads as one line."""

from __future__ import annotations

import pickle
import socket
import struct
import threading

import pytest
from botocore.exceptions import BotoCoreError

from asva_platform.storage import Storage


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
            Storage(server.url, "us-east-1", max_attempts=attempts).client.head_object(Bucket="bucket", Key="k")
        connections[attempts] = server.accepted
        server.close()
    # botocore reconnects once more on its own after a dropped connection; every attempt adds one
    assert connections[5] - connections[2] == 3, connections


def test_a_lost_connection_inside_a_wrapped_error_is_one_line():
    storage = Storage("http://127.0.0.1:9", "us-east-1", max_attempts=5)
    try:
        try:
            raise OSError("When uploading part for key 'runs/x/step_00000003/ds/zero_pp_rank_1_mp_rank_00_optim_"
                          "states.pt' in bucket 'b': AWS Error NETWORK_CONNECTION during UploadPart operation: "
                          "curlCode: 7, Could not connect to server")
        except OSError as inner:
            raise RuntimeError("Training failed due to worker errors:\n<traceback>") from inner
    except RuntimeError as outer:
        line = storage.lost_connection(outer)
    assert line is not None and "\n" not in line
    assert line.startswith("S3 at http://127.0.0.1:9 became unreachable (AWS Error NETWORK_CONNECTION during "
                           "UploadPart operation")
    assert "5 attempts" in line
    assert storage.lost_connection(RuntimeError("CUDA out of memory")) is None
    # a restarted worker's own Storage call, reported only as text inside Ray's WorkerGroupError
    ours = RuntimeError("Training failed due to worker errors: ... asva_platform.storage.StorageError: cannot reach "
                        "s3://b at http://127.0.0.1:9: connection refused or endpoint down")
    assert "connection refused or endpoint down, 5 attempts" in storage.lost_connection(ours)
