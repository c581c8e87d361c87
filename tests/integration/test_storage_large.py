"""Large objects against the real S3 server (SeaweedFS): a 1 GiB file goes up through ``Storage.upload_file`` in
a multipart upload and comes back through ``Storage.download_file``, byte for byte, while the memory of the
process moving it stays flat. Each transfer runs in a fresh process (bench/transfer_probe.py), so the peak
resident size measured is the transfer's own.

The memory bound: measured on the 2-core box, the peak grew by 8 to 13 MB for the upload and 44 to 49 MB for
the download (boto3's bounded write queue; 62 to 88 MB for 2 GiB in ``python -m bench storage``); a
transfer that held the object would grow by 1 GiB (measured: 1024 MiB for ``read_bytes``). 256 MiB leaves a
wide margin for other machines and allocators and still fails any whole-object copy. About 20 to 30 s."""

from __future__ import annotations

import hashlib
import os

import pytest

from asva_platform.storage import MIB, PART_SIZE, Storage, parse_uri
from bench.transfer_probe import run_probe

pytestmark = pytest.mark.integration

GIB = 1 << 30
MAX_GROWTH = 256 * MIB
CHUNK = 8 * MIB


def write_random(path, size: int) -> str:
    """``size`` random bytes written chunk by chunk (never whole in memory); returns their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // CHUNK):
            chunk = os.urandom(CHUNK)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_gib_file_goes_up_in_parts_and_comes_down_whole_with_flat_memory(s3_server, tmp_path):
    storage = Storage()
    src, back = tmp_path / "big.bin", tmp_path / "back.bin"
    uri = f"s3://{s3_server.bucket}/large/{tmp_path.name}/big.bin"
    u = parse_uri(uri)
    parts = -(-GIB // PART_SIZE)
    try:
        digest = write_random(src, GIB)
        up = run_probe("upload", src, uri)
        head = storage.client.head_object(Bucket=u.bucket, Key=u.key)
        assert head["ContentLength"] == GIB
        assert (
            head["ETag"].strip('"').endswith(f"-{parts}")
        )  # the ETag of an object uploaded in n parts ends in -n
        assert storage.client.head_object(Bucket=u.bucket, Key=u.key, PartNumber=1)["PartsCount"] == parts

        offset = GIB // 2 + 12345  # a ranged read, across a part boundary
        ranged = storage.client.get_object(
            Bucket=u.bucket, Key=u.key, Range=f"bytes={offset - MIB}-{offset + MIB - 1}"
        )["Body"].read()
        with open(src, "rb") as f:
            f.seek(offset - MIB)
            assert ranged == f.read(2 * MIB)
        src.unlink()  # the disk holds one copy at a time

        down = run_probe("download", uri, back)
        assert sha256_of(back) == digest
        assert [p.name for p in tmp_path.iterdir()] == ["back.bin"]  # no temporary left beside it
        for name, probe in (("upload", up), ("download", down)):
            assert probe["rss_growth"] < MAX_GROWTH, (
                f"{name} of 1 GiB grew the process by {probe['rss_growth'] / MIB:.0f} MiB"
            )
    finally:
        src.unlink(missing_ok=True)
        back.unlink(missing_ok=True)
        storage.delete(uri)
