"""The storage layer without a server: URI parsing, local writes that are atomic (a concurrent reader sees a
whole version, a failed write leaves the old file), and how a lost S3 connection reads. Against a real S3
server: tests/integration/test_storage.py; retries under connection resets: tests/reliability/test_s3_retries.py."""

from __future__ import annotations

import resource
import signal
import threading

import pytest

from asva_platform.storage import Storage, StorageError, parse_uri

MIB = 1 << 20


def test_bad_uris():
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        parse_uri("gs://bucket/x")
    with pytest.raises(StorageError, match="missing bucket"):
        parse_uri("s3:///x")


def test_local_writes_are_atomic(tmp_path):
    """A reader polling the file while it is rewritten sees one whole version or the other, never an empty,
    truncated or mixed file; no temporary file is left behind."""
    st = Storage()
    target = str(tmp_path / "f.bin")
    versions = {b"a" * (4 * MIB), b"b" * (4 * MIB)}  # large: a non-atomic write spans many write() calls
    st.write_bytes(target, b"a" * (4 * MIB))
    stop = threading.Event()
    seen: set[bytes] = set()
    torn: list[int] = []

    def poll() -> None:
        while not stop.is_set():
            data = st.read_bytes(target)
            if data in versions:
                seen.add(data[:1])
            else:
                torn.append(len(data))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(16):
            st.write_bytes(target, (b"b" if i % 2 == 0 else b"a") * (4 * MIB))
    finally:
        stop.set()
        reader.join()
    assert torn == [], f"the reader saw partial files of {sorted(set(torn))} bytes"
    assert seen == {b"a", b"b"}  # the reader did run while the file was being rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.fixture
def file_size_limit():
    """Makes writes past ``limit`` bytes fail with EFBIG, as a full disk fails a write halfway (Linux)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of killing the process

    def set_limit(limit: int | None) -> None:
        """Bytes a file may reach; None: back to the limit before the test."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if limit is None else limit, hard))

    try:
        yield set_limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_write_that_fails_halfway_leaves_the_old_file_and_no_temporary(tmp_path, file_size_limit):
    st = Storage()
    target, new = str(tmp_path / "f.json"), str(tmp_path / "new.bin")
    st.write_json(target, {"v": 1})
    file_size_limit(MIB)
    try:
        with pytest.raises(OSError):  # the temporary file got 1 MiB of the 2 MiB, then the write failed
            st.write_json(target, {"v": "x" * (2 * MIB)})
        with pytest.raises(OSError):
            st.write_bytes(new, b"x" * (2 * MIB))
    finally:
        file_size_limit(None)
    assert st.read_json(target) == {"v": 1}  # the old content, whole
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no half-written new file, no temporary


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
