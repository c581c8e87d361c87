"""The storage layer without a server: URI parsing, local writes that are atomic (a concurrent reader sees a
whole version, a failed write leaves the old file), file copies that stream and never leave a partial file
under its final name, directory downloads that never read an object whole into memory, and how a lost S3
connection reads. Against a real S3 server: tests/integration/test_storage.py (large objects:
test_storage_large.py); retries under connection resets: tests/reliability/test_s3_retries.py."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import threading
from pathlib import Path

import pytest

from asva_platform.storage import COPY_CHUNK, Storage, StorageError, parse_uri

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


def test_files_copy_to_and_from_local_uris(tmp_path):
    """upload_file and download_file on local paths: the bytes arrive whole (several copy chunks), parent
    folders are created, an existing file is replaced, nothing else is left in the folder."""
    st = Storage()
    data = os.urandom(2 * COPY_CHUNK + 12345)
    (tmp_path / "src.bin").write_bytes(data)
    stored = tmp_path / "store" / "a" / "b.bin"
    st.upload_file(tmp_path / "src.bin", str(stored))
    assert stored.read_bytes() == data
    out = tmp_path / "out" / "c.bin"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert st.download_file(str(stored), out) == out
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["c.bin"]
    assert [p.name for p in stored.parent.iterdir()] == ["b.bin"]
    with pytest.raises(StorageError, match="not found: "):
        st.download_file(str(tmp_path / "missing.bin"), tmp_path / "x.bin")
    with pytest.raises(StorageError, match="not found: "):
        st.upload_file(tmp_path / "missing.bin", str(tmp_path / "x.bin"))
    assert not (tmp_path / "x.bin").exists()


def test_a_copy_that_fails_midway_leaves_no_file_under_its_name(tmp_path, file_size_limit):
    """The disk fills up halfway through a copy (both directions): the new name never appears, an existing
    file keeps its old content, no temporary is left."""
    st = Storage()
    (tmp_path / "src.bin").write_bytes(b"x" * (4 * MIB))
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "old.bin").write_bytes(b"old")
    file_size_limit(MIB)
    try:
        with pytest.raises(OSError):
            st.upload_file(tmp_path / "src.bin", str(tmp_path / "dst" / "new.bin"))
        with pytest.raises(OSError):
            st.download_file(str(tmp_path / "src.bin"), tmp_path / "dst" / "old.bin")
    finally:
        file_size_limit(None)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["old.bin"]
    assert (tmp_path / "dst" / "old.bin").read_bytes() == b"old"


class FolderS3:
    """The boto3 calls that listing and downloading make, answered from a local folder (its subfolders are the
    buckets): the S3 branch of Storage without a server."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def head_object(self, Bucket: str, Key: str) -> dict:
        from botocore.exceptions import ClientError

        if not (self.root / Bucket / Key).is_file():
            raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
        return {}

    def get_paginator(self, _name: str):
        return self

    def paginate(self, Bucket: str, Prefix: str):
        base = self.root / Bucket
        keys = (p.relative_to(base).as_posix() for p in sorted(base.rglob("*")) if p.is_file())
        yield {"Contents": [{"Key": k} for k in keys if k.startswith(Prefix)]}

    def download_fileobj(self, Bucket: str, Key: str, Fileobj, Config=None) -> None:
        with open(self.root / Bucket / Key, "rb") as f:
            shutil.copyfileobj(f, Fileobj)


class BrokenS3(FolderS3):
    """Sends half of each object, then the connection times out."""

    def download_fileobj(self, Bucket: str, Key: str, Fileobj, Config=None) -> None:
        from botocore.exceptions import ReadTimeoutError

        data = (self.root / Bucket / Key).read_bytes()
        Fileobj.write(data[: len(data) // 2])
        raise ReadTimeoutError(endpoint_url="http://s3.test")


def folder_storage(tmp_path: Path, client_cls=FolderS3) -> Storage:
    """A Storage whose bucket ``b`` holds ``ckpt/ds/shard.pt``, ``ckpt/latest`` and ``weights.pt``."""
    for rel, data in {"ckpt/ds/shard.pt": b"s" * MIB, "ckpt/latest": b"ds", "weights.pt": b"w" * MIB}.items():
        (tmp_path / "s3" / "b" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "s3" / "b" / rel).write_bytes(data)
    st = Storage("http://s3.test")
    st._client = client_cls(tmp_path / "s3")
    return st


def test_download_dir_and_localize_stream_to_files_never_whole_objects(tmp_path, monkeypatch):
    def whole_object(self, uri):
        raise AssertionError(f"read_bytes({uri}) holds a whole object in memory")

    st = folder_storage(tmp_path)
    monkeypatch.setattr(Storage, "read_bytes", whole_object)
    got = st.download_dir("s3://b/ckpt", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in got) == ["ds/shard.pt", "latest"]
    assert (tmp_path / "out" / "ds" / "shard.pt").read_bytes() == b"s" * MIB
    file = st.localize("s3://b/weights.pt", tmp_path / "cache")
    assert file == tmp_path / "cache" / "b" / "weights.pt" and file.read_bytes() == b"w" * MIB
    folder = st.localize("s3://b/ckpt", tmp_path / "cache")
    assert (folder / "latest").read_bytes() == b"ds"
    # a local prefix copies the same way
    st.download_dir(str(tmp_path / "s3" / "b" / "ckpt"), tmp_path / "local-out")
    assert (tmp_path / "local-out" / "ds" / "shard.pt").read_bytes() == b"s" * MIB


def test_an_s3_download_cut_midway_is_one_line_and_leaves_no_file(tmp_path):
    st = folder_storage(tmp_path, BrokenS3)
    target = tmp_path / "out" / "weights.pt"
    with pytest.raises(StorageError) as info:
        st.download_file("s3://b/weights.pt", target)
    assert str(info.value) == "storage error on s3://b/weights.pt at http://s3.test: ReadTimeoutError"
    assert list((tmp_path / "out").iterdir()) == []  # half the bytes were written, to a temporary now gone


def test_a_lost_connection_inside_a_wrapped_error_is_one_line():
    storage = Storage("http://127.0.0.1:9", "us-east-1", max_attempts=5)
    try:
        try:
            raise OSError(
                "When uploading part for key 'runs/x/step_00000003/ds/zero_pp_rank_1_mp_rank_00_optim_"
                "states.pt' in bucket 'b': AWS Error NETWORK_CONNECTION during UploadPart operation: "
                "curlCode: 7, Could not connect to server"
            )
        except OSError as inner:
            raise RuntimeError("Training failed due to worker errors:\n<traceback>") from inner
    except RuntimeError as outer:
        line = storage.lost_connection(outer)
    assert line is not None and "\n" not in line
    assert line.startswith(
        "S3 at http://127.0.0.1:9 became unreachable (AWS Error NETWORK_CONNECTION during "
        "UploadPart operation"
    )
    assert "5 attempts" in line
    assert storage.lost_connection(RuntimeError("CUDA out of memory")) is None
    # a restarted worker's own Storage call, reported only as text inside Ray's WorkerGroupError
    ours = RuntimeError(
        "Training failed due to worker errors: ... asva_platform.storage.StorageError: cannot reach "
        "s3://b at http://127.0.0.1:9: connection refused or endpoint down"
    )
    assert "connection refused or endpoint down, 5 attempts" in storage.lost_connection(ours)
