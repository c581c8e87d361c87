"""One file from an HTTP(S) URL onto disk, resumable, and checked against its pinned sha256.

The partial file lives next to the target as ``<name>.part``: a later attempt (or a later run) asks the server
for the rest with a ``Range`` header and appends. Only a file whose size and sha256 match the pin is moved to
its name; a mismatch removes what was downloaded and raises a one-line error naming the file.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from asva_platform.artifacts.provenance import file_sha256
from asva_platform.errors import UserError

CHUNK = 1 << 16
"""Bytes per write: a connection that breaks loses at most this much of what it had sent."""
ATTEMPTS = 4
"""Tries per file; each resumes where the last connection broke off."""


class ChecksumError(UserError):
    """A file's bytes are not the pinned ones."""


class TransferError(UserError):
    """The server refused or the connection kept failing; the partial file is kept for a resume."""


@dataclass(frozen=True)
class Pin:
    """What a file must be."""

    sha256: str
    """Hex sha256 of the whole file; empty = not published (the file is accepted and its hash printed)."""
    size: int | None = None
    """Size in bytes where published (checked before hashing: a cheap first test)."""


def check(path: Path, pin: Pin, label: str) -> str:
    """The file's sha256 if it matches ``pin``; otherwise remove it and raise :class:`ChecksumError`."""
    size = path.stat().st_size
    if pin.size is not None and size != pin.size:
        path.unlink()
        raise ChecksumError(f"{label}: size {size} bytes, expected {pin.size}; removed {path}")
    got = file_sha256(path)
    if pin.sha256 and got != pin.sha256.lower():
        path.unlink()
        raise ChecksumError(f"{label}: sha256 {got[:16]}..., expected {pin.sha256[:16]}...; removed {path}")
    return got


def is_verified(path: Path, pin: Pin) -> bool:
    """Whether ``path`` already holds the pinned bytes (a re-run then downloads nothing)."""
    if not path.is_file() or not pin.sha256:
        return path.is_file() and not pin.sha256
    if pin.size is not None and path.stat().st_size != pin.size:
        return False
    return file_sha256(path) == pin.sha256.lower()


def download(
    url: str,
    dest: Path,
    pin: Pin,
    label: str,
    headers: Mapping[str, str] | None = None,
    describe_error=None,
    timeout: float = 60.0,
    show_progress: bool | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check it against ``pin`` and return its sha256.
    ``describe_error(response)`` may turn a refused request into a one-line message (the Hub's error codes)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    show = sys.stderr.isatty() if show_progress is None else show_progress
    last_error = ""
    for attempt in range(ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        if pin.size is not None and have >= pin.size:
            break  # an earlier run got every byte: only the check is left
        request_headers = dict(headers or {})
        if have:
            request_headers["Range"] = f"bytes={have}-"
        try:
            with requests.get(url, headers=request_headers, stream=True, timeout=timeout) as r:
                if r.status_code == 416 and have:  # nothing left to send
                    break
                if r.status_code >= 400:
                    detail = describe_error(r) if describe_error else None
                    raise TransferError(detail or f"{label}: HTTP {r.status_code} from {_host(url)}")
                resumed = have and r.status_code == 206
                total = _total(r, have if resumed else 0)
                mode = "ab" if resumed else "wb"
                with open(part, mode) as f, _bar(label, total, have if resumed else 0, show) as bar:
                    for block in r.iter_content(CHUNK):
                        f.write(block)
                        bar.update(len(block))
            if total is None or part.stat().st_size >= total:
                break
            last_error = f"connection closed at {part.stat().st_size} of {total} bytes"
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            last_error = str(err).splitlines()[0][:160]
        time.sleep(min(2.0**attempt * 0.2, 5.0))
    else:
        raise TransferError(
            f"{label}: {last_error} after {ATTEMPTS} tries; {part.name} kept, re-run to resume"
        )
    os.replace(part, dest)
    return check(dest, pin, label)


def _host(url: str) -> str:
    return url.split("/")[2] if "//" in url else url


def _total(r: requests.Response, offset: int) -> int | None:
    length = r.headers.get("Content-Length")
    return offset + int(length) if length is not None and length.isdigit() else None


def _bar(label: str, total: int | None, initial: int, show: bool) -> tqdm:
    """A bar per file with its size and speed (stderr, only on a terminal unless asked)."""
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not show,
        leave=True,
        dynamic_ncols=True,
    )
