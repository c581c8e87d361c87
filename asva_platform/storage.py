"""One way to address data: ``s3://bucket/key`` URIs and local paths.

* :meth:`Storage.filesystem` gives a ``pyarrow.fs`` filesystem + path, which is what Ray Data, Ray Train
  (``storage_filesystem``) and the dataset reader take.
* Object operations (exists, list, read/write bytes/json, delete, upload/download of files and directories)
  go through boto3 on S3 and plain files locally.
* Small objects (JSON, manifests, side files of a few MB) are read and written whole, in memory
  (:meth:`Storage.read_bytes`, :meth:`Storage.write_bytes`). Files, which may be GBs (checkpoint shards,
  weights, exported models, videos), never are: :meth:`Storage.upload_file` streams them from disk in a
  multipart upload and :meth:`Storage.download_file` in concurrent ranged GETs straight into a file
  (:func:`transfer_config` says how), so a process's memory stays flat whatever the object's size. Every
  caller that moves a file goes through these two (``upload_dir``, ``download_dir`` and ``localize`` too).
* Writes are atomic. On S3 an object is a single PUT or, from :data:`PART_SIZE` on, a multipart upload, which
  appears only when its CompleteMultipartUpload succeeds: whole or not at all. A failed upload is aborted;
  one whose process died leaves its parts on the server, invisible to readers and listings, until the
  bucket's AbortIncompleteMultipartUpload lifecycle rule (or an abort) removes them. Locally, and for
  every download, the data goes to a temporary file beside the target, renamed into place once complete:
  a half-written or half-downloaded file never appears under its final name.
* Credentials come from the standard AWS chain (env, profile, instance role). They are never taken from
  configs and never printed: errors name the endpoint and bucket only.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from asva_model.errors import AsvaError, require

DEFAULT_S3_PORT = 9100
DEFAULT_BUCKET = "asva"

MIB = 1 << 20
PART_SIZE = 32 * MIB
"""Multipart part size, and the size from which a file goes up (and comes down) in parts. The largest file
of a full-size checkpoint (all of its ≈3.7 GB with Adam on a single rank) is then ~120 parts, far under
S3's 10,000-part cap (an object of up to 312 GiB) and above its 5 MiB minimum; a failed part resends only
32 MiB. Below it, one PUT or GET: one request instead of a multipart upload's three or more, and atomic
as well."""
TRANSFER_THREADS = 4
"""Parts in flight per file. A few streams fill a local or in-region endpoint; more would take CPU from
training, next to which checkpoint uploads run (asynchronous checkpoints), for little gain."""
COPY_CHUNK = 8 * MIB
"""Bytes per read when a file is copied between local paths."""
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
"""Error codes of a missing object (HEAD answers a bare 404)."""


@functools.cache
def transfer_config():
    """How boto3 moves files (see :data:`PART_SIZE`, :data:`TRANSFER_THREADS`). Memory stays flat in the
    object's size: an upload reads each part from disk as it sends it, a download writes each part at its
    offset through a bounded queue (boto3's 100 x 256 KiB). The classic transfer manager because the CRT one,
    which boto3 picks by itself on some instance types when awscrt is installed, ignores these settings."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=TRANSFER_THREADS,
        preferred_transfer_client="classic",
    )


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
            require(
                self.endpoint_url.startswith(("http://", "https://")),
                "endpoint_url",
                f"must start with http:// or https://, got {self.endpoint_url!r}",
            )
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
_CONNECTION_LOST = (
    re.compile(r"AWS Error NETWORK_CONNECTION during \w+ operation"),
    re.compile(r"Could not connect to the endpoint URL"),
    re.compile(rf"cannot reach s3://\S+ at \S+: {_ENDPOINT_DOWN}"),
)


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


def _error_code(err: BaseException) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _atomic_write(path: Path, fill: Callable[[BinaryIO], Any]) -> None:
    """``fill`` writes the content into a temporary file beside ``path``, which then replaces ``path`` in one
    rename (after fsync, so a crash cannot leave the new name on an unwritten file): a reader sees the old
    file or the new one, whole; a failure leaves the old file and no temporary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_local(src: Path, dest: Path) -> None:
    """Copy a local file in fixed-size chunks (never whole in memory), renamed into place when complete."""
    with open(src, "rb") as source:
        _atomic_write(dest, lambda f: shutil.copyfileobj(source, f, COPY_CHUNK))


class Storage:
    """Object operations on S3 (boto3) or the local filesystem, selected by URI."""

    def __init__(self, endpoint_url: str = "", region: str = "", max_attempts: int = 8) -> None:
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
        self.region = (
            region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        )
        self.max_attempts = max_attempts
        self._client = None

    @classmethod
    def from_config(cls, storage_cfg: StorageConfig) -> Storage:
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

    def _new_client(self, connect_timeout: float, read_timeout: float, max_attempts: int):
        """A boto3 S3 client of its own session: the credential chain is read now, not from a session an
        earlier client of this process cached (a key changed or another endpoint's key would be ignored)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            region_name=self.region,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                signature_version="s3v4",
                s3={"addressing_style": "path"},
            ),
        )

    @property
    def client(self):
        if self._client is None:
            self._client = self._new_client(5, 60, self.max_attempts)
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
        from boto3.exceptions import Boto3Error, S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
        from s3transfer.exceptions import RetriesExceededError

        try:
            return fn(*args, **kwargs)
        except EndpointConnectionError:
            raise StorageError(f"cannot reach {self._where(u)}: {_ENDPOINT_DOWN}") from None
        except ClientError as err:
            self._raise_known(u, err)
            raise
        except S3UploadFailedError as err:  # boto3's upload_file wraps the ClientError of a failed part
            if isinstance(err.__context__, ClientError):
                self._raise_known(u, err.__context__)
                raise StorageError(
                    f"upload to {u} failed at {self._endpoint_name}: {_error_code(err.__context__)}"
                ) from None
            raise StorageError(f"upload to {u} failed at {self._endpoint_name}") from None
        except (BotoCoreError, Boto3Error, RetriesExceededError) as err:  # the last two: a transfer gave up
            raise StorageError(
                f"storage error on {u} at {self._endpoint_name}: {type(err).__name__}"
            ) from None

    def _raise_known(self, u: URI, err) -> None:
        """A StorageError for a ClientError that means a missing bucket or no access; else nothing."""
        code = _error_code(err)
        if code in ("NoSuchBucket",):
            raise StorageError(f"bucket does not exist: {self._where(u)}") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise StorageError(f"access denied to {u} ({code}); check the AWS credential chain") from None

    @contextmanager
    def _not_found_is_one_line(self, u: URI) -> Iterator[None]:
        """A missing object or local file becomes ``StorageError("not found: <uri>")``."""
        from botocore.exceptions import ClientError

        try:
            yield
        except FileNotFoundError:
            raise StorageError(f"not found: {u}") from None
        except ClientError as err:
            if _error_code(err) in _NOT_FOUND:
                raise StorageError(f"not found: {u}") from None
            raise

    def lost_connection(self, err: BaseException) -> str | None:
        """One line saying this storage became unreachable, when ``err`` (however deeply Ray wrapped it) says
        so; None for any other error."""
        text = " ".join(str(e) for e in _chain(err))
        for pattern in _CONNECTION_LOST:
            found = pattern.search(text)
            if found:
                return (
                    f"S3 at {self._endpoint_name} became unreachable ({found.group(0)}, {self.max_attempts} attempts; "
                    f"storage.max_attempts sets how many)"
                )
        return None

    # ---- checks --------------------------------------------------------------------------------
    def check_reachable(self, uri: str) -> None:
        """Fail fast, before taking cluster resources, if ``uri``'s bucket (or local parent) is unusable."""
        u = parse_uri(uri)
        if not u.is_s3:
            Path(u.key).mkdir(parents=True, exist_ok=True)
            return
        from botocore.exceptions import ClientError

        quick = self._new_client(2, 5, 2)

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
            if _error_code(err) in _NOT_FOUND:
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
            out.extend(
                f"s3://{u.bucket}/{obj['Key']}"
                for obj in page.get("Contents", [])
                if not obj["Key"].endswith("/")
            )
        return sorted(out)

    def read_bytes(self, uri: str) -> bytes:
        """The whole object in memory: for small objects; a file that may be large goes through
        :meth:`download_file`."""
        u = parse_uri(uri)
        with self._not_found_is_one_line(u):
            if not u.is_s3:
                return Path(u.key).read_bytes()
            return self._call(u, self.client.get_object, Bucket=u.bucket, Key=u.key)["Body"].read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Small data held in memory (one PUT); a file goes up with :meth:`upload_file`."""
        u = parse_uri(uri)
        if u.is_s3:
            self._call(u, self.client.put_object, Bucket=u.bucket, Key=u.key, Body=data)
        else:
            _atomic_write(Path(u.key), lambda f: f.write(data))

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

    def upload_file(self, local_path: str | Path, uri: str) -> None:
        """Copy the file ``local_path`` to ``uri``, streamed from disk: on S3 one PUT, or a multipart upload
        from :data:`PART_SIZE` on (whole object or nothing); locally a copy renamed into place."""
        u, src = parse_uri(uri), Path(local_path)
        if not src.is_file():
            raise StorageError(f"not found: {src}")
        if u.is_s3:
            self._call(u, self.client.upload_file, str(src), u.bucket, u.key, Config=transfer_config())
        else:
            _copy_local(src, Path(u.key))

    def download_file(self, uri: str, local_path: str | Path) -> Path:
        """Copy the object (or local file) ``uri`` to the file ``local_path``, streamed to disk (ranged GETs
        from :data:`PART_SIZE` on) into a temporary file renamed into place when complete; returns the path."""
        u, dest = parse_uri(uri), Path(local_path)
        with self._not_found_is_one_line(u):
            if u.is_s3:
                _atomic_write(
                    dest,
                    lambda f: self._call(
                        u, self.client.download_fileobj, u.bucket, u.key, f, Config=transfer_config()
                    ),
                )
            else:
                _copy_local(Path(u.key), dest)
        return dest

    def upload_dir(self, local_dir: str | Path, uri: str) -> list[str]:
        """Copy every file under ``local_dir`` to prefix ``uri`` (each object written atomically)."""
        local_dir = Path(local_dir)
        written = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            target = join(uri, path.relative_to(local_dir).as_posix())
            self.upload_file(path, target)
            written.append(target)
        return written

    def download_dir(self, uri: str, local_dir: str | Path) -> list[Path]:
        """Copy every object under prefix ``uri`` into ``local_dir``, keeping relative paths."""
        local_dir = Path(local_dir)
        base = str(uri).rstrip("/")
        out = []
        for item in self.list(uri):
            rel = (
                item[len(base) :].lstrip("/")
                if is_s3(base)
                else str(Path(item).relative_to(parse_uri(base).key))
            )
            out.append(self.download_file(item, local_dir / rel))
        return out

    def localize(self, uri: str, cache_dir: str | Path) -> Path:
        """A local path for ``uri``: itself when local, else a downloaded copy (file or prefix) under ``cache_dir``."""
        u = parse_uri(uri)
        if not u.is_s3:
            return Path(u.key)
        dest = Path(cache_dir) / u.bucket / u.key
        if self.exists(uri):
            self.download_file(uri, dest)
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
            super().__init__(
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts), **kwargs
            )

        def __reduce__(self):
            return functools.partial(retrying_s3_filesystem, max_attempts, **kwargs), ()

    return RetryingS3FileSystem()
