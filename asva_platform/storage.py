"""One way to address data: ``s3://bucket/key`` URIs and local paths.

* :meth:`Storage.filesystem` gives a ``pyarrow.fs`` filesystem + path, which is what Ray Data, Ray Train
  (``storage_filesystem``) and the dataset reader take.
* Object operations (exists, list, read/write bytes/json, delete, upload/download of directories) go
  through boto3 on S3 and plain files locally. Writes are atomic: a single PUT on S3 (an object appears
  whole or not at all), write-to-temp-then-rename locally.
* Credentials come from the standard AWS chain (env, profile, instance role). They are never taken from
  configs and never printed: errors name the endpoint and bucket only.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from asva_model.errors import AsvaError, require

DEFAULT_S3_PORT = 9100
DEFAULT_BUCKET = "asva"


@dataclass
class StorageConfig:
    root: str = f"s3://{DEFAULT_BUCKET}"
    """Where caches, checkpoints and results live: `s3://bucket/prefix` or a local directory."""
    endpoint_url: str = ""
    """S3 endpoint (e.g. the local S3 server); empty = $AWS_ENDPOINT_URL, else AWS itself."""
    region: str = "us-east-1"
    """S3 region."""
    max_attempts: int = 8
    """Attempts per S3 request (boto3 and pyarrow, standard retry mode, exponential backoff). 8 rides out an
    S3 outage of about 50 s in pyarrow (checkpoints, cache reads) and 10 s in boto3; raise it for longer ones."""

    def __post_init__(self) -> None:
        require(bool(self.root), "root", "must not be empty")
        if self.endpoint_url:
            require(self.endpoint_url.startswith(("http://", "https://")), "endpoint_url",
                    f"must start with http:// or https://, got {self.endpoint_url!r}")
        require(self.max_attempts >= 1, "max_attempts", "must be >= 1")

    def resolved_endpoint(self) -> str:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")

    @property
    def cache_root(self) -> str:
        return self.root.rstrip("/") + "/caches"

    @property
    def runs_root(self) -> str:
        return self.root.rstrip("/") + "/runs"


class StorageError(AsvaError):
    """A storage problem phrased as one line naming the URI/endpoint (never credentials)."""


_ENDPOINT_DOWN = "connection refused or endpoint down"
# How pyarrow (AWS SDK), botocore and our own Storage._call say the endpoint could not be reached (inside a Ray
# error, ours arrives only as text)
_CONNECTION_LOST = (re.compile(r"AWS Error NETWORK_CONNECTION during \w+ operation"),
                    re.compile(r"Could not connect to the endpoint URL"),
                    re.compile(rf"cannot reach s3://\S+ at \S+: {_ENDPOINT_DOWN}"))


def _chain(err: BaseException):
    """``err`` and its causes/contexts."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


@dataclass(frozen=True)
class URI:
    scheme: str  # "s3" or "file"
    bucket: str  # empty for local paths
    key: str  # object key (S3) or absolute path (local)

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}".rstrip("/") if self.is_s3 else self.key


def parse_uri(uri: str | os.PathLike) -> URI:
    text = str(uri)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise StorageError(f"{text}: missing bucket name")
        return URI("s3", parsed.netloc, parsed.path.lstrip("/"))
    if "://" in text and not text.startswith("file://"):
        raise StorageError(f"{text}: unsupported URI scheme (use s3:// or a local path)")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return URI("file", "", str(Path(text).expanduser().resolve()))


def join(base: str, *parts: str) -> str:
    """Join URI/path components with '/', keeping the scheme."""
    if str(base).startswith("s3://"):
        return posixpath.join(str(base).rstrip("/"), *[p.strip("/") for p in parts])
    return str(Path(base, *parts))


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


class Storage:
    """Object operations on S3 (boto3) or the local filesystem, selected by URI."""

    def __init__(self, endpoint_url: str = "", region: str = "", max_attempts: int = 8) -> None:
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        self.max_attempts = max_attempts
        self._client = None

    @classmethod
    def from_config(cls, storage_cfg: Any) -> Storage:
        """From the experiment's ``storage`` section."""
        return cls(storage_cfg.resolved_endpoint(), storage_cfg.region, storage_cfg.max_attempts)

    def params(self) -> dict[str, Any]:
        """``Storage(**params)`` rebuilds this storage in another process (Ray tasks and actors)."""
        return {"endpoint_url": self.endpoint_url, "region": self.region, "max_attempts": self.max_attempts}

    # ---- clients -------------------------------------------------------------------------------
    @property
    def _endpoint_name(self) -> str:
        """The endpoint as errors name it."""
        return self.endpoint_url or "AWS S3"

    def _where(self, u: URI) -> str:
        return f"s3://{u.bucket} at {self._endpoint_name}"

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url or None,
                region_name=self.region,
                config=Config(
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": self.max_attempts, "mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                ),
            )
        return self._client

    def filesystem(self, uri: str):
        """``(pyarrow.fs.FileSystem, path)`` for ``uri``; S3 paths are ``bucket/key`` (no scheme)."""
        import pyarrow.fs as pafs

        u = parse_uri(uri)
        if not u.is_s3:
            return pafs.LocalFileSystem(), u.key
        kwargs: dict[str, Any] = {"region": self.region}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        kwargs["connect_timeout"] = 5
        kwargs["request_timeout"] = 60
        return retrying_s3_filesystem(self.max_attempts, **kwargs), f"{u.bucket}/{u.key}".rstrip("/")

    def _call(self, u: URI, fn, *args, **kwargs):
        """Run a boto3 call, turning transport/permission errors into one-line StorageErrors."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            return fn(*args, **kwargs)
        except EndpointConnectionError:
            raise StorageError(f"cannot reach {self._where(u)}: {_ENDPOINT_DOWN}") from None
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",):
                raise StorageError(f"bucket does not exist: {self._where(u)}") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise StorageError(f"access denied to {u} ({code}); check the AWS credential chain") from None
            raise
        except BotoCoreError as err:
            raise StorageError(f"storage error on {u} at {self._endpoint_name}: {type(err).__name__}") from None

    def lost_connection(self, err: BaseException) -> str | None:
        """One line saying this storage became unreachable, when ``err`` (however deeply Ray wrapped it) says
        so; None for any other error."""
        text = " ".join(str(e) for e in _chain(err))
        for pattern in _CONNECTION_LOST:
            found = pattern.search(text)
            if found:
                return (f"S3 at {self._endpoint_name} became unreachable ({found.group(0)}, {self.max_attempts} attempts; "
                        f"storage.max_attempts sets how many)")
        return None

    # ---- checks --------------------------------------------------------------------------------
    def check_reachable(self, uri: str) -> None:
        """Fail fast, before taking cluster resources, if ``uri``'s bucket (or local parent) is unusable."""
        u = parse_uri(uri)
        if not u.is_s3:
            Path(u.key).mkdir(parents=True, exist_ok=True)
            return
        import boto3
        from botocore.config import Config

        quick = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            region_name=self.region,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"},
                          s3={"addressing_style": "path"}),
        )
        from botocore.exceptions import ClientError

        try:
            self._call(u, quick.head_bucket, Bucket=u.bucket)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise StorageError(f"bucket does not exist: {self._where(u)}") from None
            raise StorageError(f"cannot use {self._where(u)}: {code}") from None

    def ensure_bucket(self, uri: str) -> None:
        u = parse_uri(uri)
        if not u.is_s3:
            Path(u.key).mkdir(parents=True, exist_ok=True)
            return
        from botocore.exceptions import ClientError

        try:
            self._call(u, self.client.head_bucket, Bucket=u.bucket)
        except (ClientError, StorageError):
            self._call(u, self.client.create_bucket, Bucket=u.bucket)

    # ---- object operations ---------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        u = parse_uri(uri)
        if not u.is_s3:
            return Path(u.key).exists()
        from botocore.exceptions import ClientError

        try:
            self._call(u, self.client.head_object, Bucket=u.bucket, Key=u.key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, uri: str) -> list[str]:
        """Every object (file) under prefix ``uri``, as full URIs, sorted."""
        u = parse_uri(uri)
        if not u.is_s3:
            root = Path(u.key)
            if root.is_file():
                return [str(root)]
            return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        prefix = u.key.rstrip("/") + "/" if u.key else ""
        out: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(u, lambda: list(paginator.paginate(Bucket=u.bucket, Prefix=prefix)))
        for page in pages:
            # Keys ending in "/" are directory markers (Ray writes them), not files.
            out.extend(f"s3://{u.bucket}/{obj['Key']}" for obj in page.get("Contents", [])
                       if not obj["Key"].endswith("/"))
        return sorted(out)

    def read_bytes(self, uri: str) -> bytes:
        u = parse_uri(uri)
        if not u.is_s3:
            try:
                return Path(u.key).read_bytes()
            except FileNotFoundError:
                raise StorageError(f"not found: {u}") from None
        from botocore.exceptions import ClientError

        try:
            return self._call(u, self.client.get_object, Bucket=u.bucket, Key=u.key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise StorageError(f"not found: {u}") from None
            raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        u = parse_uri(uri)
        if u.is_s3:
            self._call(u, self.client.put_object, Bucket=u.bucket, Key=u.key, Body=data)
            return
        path = Path(u.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_json(self, uri: str, obj: Any) -> None:
        self.write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode())

    def delete(self, uri: str) -> None:
        u = parse_uri(uri)
        if u.is_s3:
            self._call(u, self.client.delete_object, Bucket=u.bucket, Key=u.key)
        else:
            Path(u.key).unlink(missing_ok=True)

    def upload_dir(self, local_dir: str | Path, uri: str) -> list[str]:
        """Copy every file under ``local_dir`` to prefix ``uri`` (each object written atomically)."""
        local_dir = Path(local_dir)
        written = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            target = join(uri, path.relative_to(local_dir).as_posix())
            u = parse_uri(target)
            if u.is_s3:
                self._call(u, self.client.upload_file, str(path), u.bucket, u.key)
            else:
                self.write_bytes(target, path.read_bytes())
            written.append(target)
        return written

    def download_dir(self, uri: str, local_dir: str | Path) -> list[Path]:
        """Copy every object under prefix ``uri`` into ``local_dir``, keeping relative paths."""
        local_dir = Path(local_dir)
        base = str(uri).rstrip("/")
        out = []
        for item in self.list(uri):
            rel = item[len(base) :].lstrip("/") if is_s3(base) else str(Path(item).relative_to(parse_uri(base).key))
            dest = local_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(item))
            out.append(dest)
        return out

    def localize(self, uri: str, cache_dir: str | Path) -> Path:
        """A local path for ``uri``: itself when local, else a downloaded copy (file or prefix) under ``cache_dir``."""
        u = parse_uri(uri)
        if not u.is_s3:
            return Path(u.key)
        dest = Path(cache_dir) / u.bucket / u.key
        if self.exists(uri):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(uri))
        else:
            self.download_dir(uri, dest)
        return dest


# ---------------------------------------------------------------------------------------------
# A pyarrow S3 filesystem that keeps its retry strategy when pickled


def retrying_s3_filesystem(max_attempts: int, **kwargs: Any):
    """A ``pyarrow.fs.S3FileSystem`` with the standard retry strategy. pyarrow (25) drops ``retry_strategy``
    when it pickles an S3FileSystem, so the copy Ray ships to the Train controller, its workers and Ray Data
    tasks would fall back to 3 quick attempts (about 1.6 s), and a short S3 outage would fail the run. This
    subclass pickles as a call to this function, retry strategy included."""
    import pyarrow.fs as pafs

    class RetryingS3FileSystem(pafs.S3FileSystem):
        def __init__(self) -> None:
            super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts), **kwargs)

        def __reduce__(self):
            return functools.partial(retrying_s3_filesystem, max_attempts, **kwargs), ()

    return RetryingS3FileSystem()
