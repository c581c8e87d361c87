"""One file transfer through ``Storage`` in a fresh process, measured: its time and how much the process's peak
resident memory grew during it (imports and the S3 client come before the baseline, which is the resident
size just before the transfer, so the growth is what the transfer itself holds). Used by ``bench_storage``
and tests/integration/test_storage_large.py.

``python -m bench.transfer_probe upload|download SRC DST`` prints one JSON line
``{"seconds": ..., "rss_before": ..., "rss_peak": ..., "rss_growth": ...}`` (bytes); the S3 endpoint and
credentials come from the environment, as for any client.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status (Linux, reported in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def peak_rss() -> int:
    """This process's peak resident size since :func:`reset_peak_rss`, in bytes. Linux: VmHWM, the peak of this
    process's own memory. Not ``ru_maxrss``: a process started by fork (or vfork) and exec inherits the
    parent's peak there, so a child of a big parent reads the parent's size. Elsewhere ru_maxrss (KiB on Linux,
    bytes on macOS: an estimate only)."""
    try:
        return _status_bytes("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> int:
    """Restart the peak from the current resident size and return it, so that a transient peak of the imports
    (botocore's service models) cannot hide a transfer that stays below it (Linux: clear_refs; elsewhere the
    peak so far stays, and the growth measured may read low)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return peak_rss()


def measure(direction: str, src: str, dst: str) -> dict[str, float]:
    from asva_platform.storage import Storage, transfer_config

    storage = Storage()
    _ = storage.client, transfer_config()  # built before the baseline: not the transfer's memory
    before = reset_peak_rss()
    t0 = time.perf_counter()
    if direction == "upload":
        storage.upload_file(src, dst)
    else:
        storage.download_file(src, dst)
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    return {"seconds": seconds, "rss_before": before, "rss_peak": peak, "rss_growth": peak - before}


def run_probe(
    direction: str, src: str | Path, dst: str | Path, env: dict[str, str] | None = None, timeout: float = 900
) -> dict[str, float]:
    """:func:`measure` in a fresh Python process (``env``: its environment, default this one's)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.transfer_probe", direction, str(src), str(dst)],
        cwd=REPO,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"transfer probe {direction} {src} -> {dst} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(*sys.argv[1:4])))
