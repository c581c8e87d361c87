"""The infra manifests' frozen-weights fetch (the one-liner every GPU node group runs) against a real S3 server
(moto). The offline checks of the same manifests: infra/check.py, run by tests/unit/test_infra.py."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from asva_platform.storage import Storage
from tests.unit.test_infra import REPO, check, weights_fetch_codes

pytestmark = pytest.mark.integration


def test_weights_fetch_command_downloads_the_weights_prefix(s3_server, tmp_path):
    """Runs the manifests' own fetch code against the S3 server, into a temporary directory."""
    # The S3 server is shared by the session, so this test owns a prefix that no other test writes under.
    root = f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"
    store = Storage()
    store.write_bytes(f"{root}/weights/stable-diffusion-v1-5/vae/config.json", b'{"a": 1}')
    store.write_bytes(f"{root}/weights/imagebind_huge.pth", b"\x00\x01weights")
    store.write_bytes(f"{root}/not-weights/other.bin", b"no")
    code = weights_fetch_codes()["k8s/rayjob-train.yaml:gpu-train"]
    code = code.replace(f"s3://{check.SAMPLE['ASVA_DATA_BUCKET']}/", f"{root}/").replace(
        "/home/ray/weights", str(tmp_path)
    )
    env = {**os.environ, **s3_server.env}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["imagebind_huge.pth", "stable-diffusion-v1-5/vae/config.json"]
    assert (tmp_path / "imagebind_huge.pth").read_bytes() == b"\x00\x01weights"
