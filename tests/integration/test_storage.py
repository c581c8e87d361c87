"""Storage layer against a real S3-protocol server (SeaweedFS, disk-backed, with its own generated key) and the
local filesystem. Without a server (URIs, atomic local writes, streamed copies): tests/unit/test_storage.py;
GB objects (multipart uploads, ranged downloads, flat memory): tests/integration/test_storage_large.py."""

from __future__ import annotations

import configparser
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from asva_platform.dev.fixtures import tiny_model_config
from asva_platform.storage import Storage, StorageError, join, parse_uri

pytestmark = pytest.mark.integration


@pytest.fixture(params=["s3", "local"])
def root(request, s3_server, tmp_path):
    if request.param == "s3":
        return f"s3://{s3_server.bucket}/storage-test/{tmp_path.name}"
    return str(tmp_path / "store")


def test_round_trip_bytes_json_list_delete(root, tmp_path):
    st = Storage()
    a, b = join(root, "a.bin"), join(root, "sub", "b.json")
    assert not st.exists(a)
    st.write_bytes(a, b"\x00\x01hello")
    st.write_json(b, {"x": [1, 2]})
    assert st.exists(a) and st.read_bytes(a) == b"\x00\x01hello"
    assert st.read_json(b) == {"x": [1, 2]}
    assert st.list(root) == sorted([a, b])
    st.delete(a)
    assert not st.exists(a) and st.list(root) == [b]
    with pytest.raises(StorageError, match="not found"):
        st.read_bytes(a)
    with pytest.raises(StorageError, match=f"not found: {a}$"):
        st.download_file(a, tmp_path / "a.bin")
    assert not (tmp_path / "a.bin").exists()


def test_upload_download_dir(root, tmp_path):
    src = tmp_path / "src"
    (src / "x" / "y").mkdir(parents=True)
    (src / "x" / "y" / "f.txt").write_text("deep")
    (src / "top.txt").write_text("top")
    st = Storage()
    written = st.upload_dir(src, join(root, "dir"))
    assert len(written) == 2
    out = tmp_path / "out"
    st.download_dir(join(root, "dir"), out)
    assert (out / "x" / "y" / "f.txt").read_text() == "deep" and (out / "top.txt").read_text() == "top"


def test_directory_markers_are_not_files(s3_server, tmp_path):
    st = Storage()
    root = f"s3://{s3_server.bucket}/markers/{tmp_path.name}"
    st.write_bytes(join(root, "ckpt") + "/", b"")  # the empty "directory" objects Ray writes to S3
    st.write_bytes(join(root, "ckpt", "shard.pt"), b"weights")
    assert st.list(root) == [join(root, "ckpt", "shard.pt")]
    st.download_dir(root, tmp_path / "out")
    assert (tmp_path / "out" / "ckpt" / "shard.pt").read_bytes() == b"weights"


def test_pyarrow_filesystem_sees_the_same_objects(root):
    st = Storage()
    uri = join(root, "pa", "obj.txt")
    st.write_bytes(uri, b"through boto3")
    fs, path = st.filesystem(uri)
    with fs.open_input_stream(path) as f:
        assert f.read() == b"through boto3"
    if parse_uri(uri).is_s3:
        assert isinstance(fs, pafs.S3FileSystem) and not path.startswith("s3://")


def server_key(s3_server) -> list[str]:
    creds = configparser.ConfigParser()
    creds.read(s3_server.credentials_file)
    return [creds["default"]["aws_access_key_id"], creds["default"]["aws_secret_access_key"]]


def test_unreachable_endpoint_is_one_clear_line(s3_server):
    st = Storage("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(StorageError) as info:
        st.check_reachable("s3://some-bucket/x")
    msg = str(info.value)
    assert "http://127.0.0.1:9" in msg and "cannot reach" in msg and "\n" not in msg
    assert not any(secret in msg for secret in server_key(s3_server))  # never the credentials


def test_a_refused_file_upload_is_one_line_without_credentials(s3_server, tmp_path):
    """boto3 wraps a failed upload's ClientError in its own error; Storage still names the refusal in one line."""
    import boto3

    (tmp_path / "f.bin").write_bytes(b"x")
    uri = f"s3://{s3_server.bucket}/refused/{tmp_path.name}/f.bin"
    refused = Storage()
    # a client of its own: boto3's default session keeps the credentials it resolved first
    refused._client = boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        region_name="us-east-1",
        aws_access_key_id="ASVAWRONGKEY",
        aws_secret_access_key="wrong-secret",
    )
    with pytest.raises(StorageError) as info:
        refused.upload_file(tmp_path / "f.bin", uri)
    msg = str(info.value)
    assert msg.startswith(f"access denied to {uri} (") and "\n" not in msg
    assert not any(secret in msg for secret in ["wrong-secret", *server_key(s3_server)])
    assert not Storage().exists(uri)


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(StorageError, match="bucket does not exist: s3://no-such-bucket"):
        Storage().check_reachable("s3://no-such-bucket/prefix")
    Storage().check_reachable(f"s3://{s3_server.bucket}/prefix")


def test_every_s3_weight_path_of_a_model_config_is_downloaded(s3_server, tmp_path):
    from asva_platform.inference.weights import localize_model_paths

    storage = Storage()
    root = f"s3://{s3_server.bucket}/weights-{tmp_path.name}"
    files = {
        "init_unet": ("unet3d", ["config.json", "diffusion_pytorch_model.safetensors"]),
        "pretrained_sd": ("sd", ["model_index.json", "vae/config.json"]),
        "audio_encoder_weights": ("audio.pth", [""]),
        "text_encodings": ("text.pt", [""]),
    }
    for name, rels in files.values():
        for rel in rels:
            storage.write_bytes(join(root, name, rel) if rel else join(root, name), f"{name}/{rel}".encode())
    cfg = tiny_model_config(**{field: join(root, name) for field, (name, _) in files.items()})
    local = localize_model_paths(cfg, storage, str(tmp_path / "cache"))
    for field, (name, rels) in files.items():
        path = Path(getattr(local, field))
        assert path.exists() and str(tmp_path / "cache") in str(path), field
        for rel in rels:
            assert (path / rel if rel else path).read_bytes() == f"{name}/{rel}".encode(), (field, rel)
