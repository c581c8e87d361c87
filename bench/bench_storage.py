"""Storage benchmark: large objects on the local stack's S3 server (SeaweedFS, disk-backed) and on moto (the
server it replaced; its objects do not outlive its process), side by side in one run.

* Transfers: a random file of each ``--sizes`` (default 64 MiB, 512 MiB, 2 GiB) goes up through
  ``Storage.upload_file`` (multipart from ``storage.PART_SIZE``) and comes back through ``Storage.download_file``
  (ranged GETs), each transfer in a fresh process (``bench/transfer_probe.py``). Printed per size and server:
  upload and download MB/s (10^6 bytes), the transferring process's peak resident size and its growth during
  the transfer (upload / download), and the server's resident size with the object stored.
* Checkpoint stall: one training run per server with ``train.checkpoint_upload=async`` and a single
  checkpoint, the tiny UNet widened (``--channels``) so that the checkpoint is about 1 GB (its size is
  printed); the stall is the ``checkpoint_stall_s`` the training loop logs (bench_checkpoint's machinery).

Ratios are SeaweedFS / moto. Nothing is asserted; results go to stdout and bench/results/storage.json.
Needs about 3 x the largest size free on disk (the file, its download, SeaweedFS's copy); the work directory
is removed at the end unless given (``--work-dir``).

``python -m bench storage`` or ``python -m bench.bench_storage [--sizes 64,512,2048] [--channels A,B]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from asva_platform.dev.s3_server import REGION, start_s3_server
from asva_platform.dev.services import (
    HOST,
    env_applied,
    free_port,
    kill_tree,
    port_open,
    spawn,
    wait_until,
    with_env,
)
from asva_platform.storage import MIB, Storage
from bench.bench_checkpoint import fit, prepare_inputs
from bench.common import local_ray_defaults, work_dir, write_results
from bench.transfer_probe import run_probe

BUCKET = "bench-storage"
MOTO_KEY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
"""moto accepts any key; a client of it needs some."""


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench_storage", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,512,2048", help="object sizes in MiB")
    p.add_argument("--channels", default="384,768", help="UNet block_out_channels (the checkpoint's size)")
    p.add_argument("--work-dir", default="", help="keep inputs here (default: a temp dir)")
    return p.parse_args(argv)


@dataclass
class Server:
    name: str
    env: dict[str, str]
    """Its clients' environment (apply with ``env_applied``/``with_env``: an empty value unsets)."""
    pid: int

    def rss(self) -> int:
        """The server's resident size, its child processes included."""
        import psutil

        root = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


@contextmanager
def seaweedfs(work: Path) -> Iterator[Server]:
    s3 = start_s3_server(work / "seaweedfs", bucket=BUCKET, log_dir=work)
    try:
        yield Server("seaweedfs", s3.env, s3.pid)
    finally:
        s3.stop()


@contextmanager
def moto(work: Path) -> Iterator[Server]:
    """moto's S3 server on a free loopback port, with the bucket; its clients use a dummy key, never a file."""
    port = free_port()
    log = work / f"moto-{port}.log"
    proc = spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], log, dict(os.environ))
    url = f"http://{HOST}:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        **MOTO_KEY,
        "AWS_SESSION_TOKEN": "",
        "AWS_SHARED_CREDENTIALS_FILE": "",
        "AWS_PROFILE": "",
    }
    try:
        wait_until(lambda: port_open(port), 60, f"moto server on port {port}", proc, log)
        with env_applied(env):
            Storage(url).ensure_bucket(f"s3://{BUCKET}")
        yield Server("moto", env, proc.pid)
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=30)


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes, written 8 MiB at a time."""
    with open(path, "wb") as f:
        for _ in range(size // (8 * MIB)):
            f.write(os.urandom(8 * MIB))
        f.write(os.urandom(size % (8 * MIB)))
    return path


def transfer(server: Server, src: Path, work: Path) -> dict:
    """``src`` up and back down through Storage, each direction in a fresh process; the object and the copy
    are removed afterwards."""
    size = src.stat().st_size
    uri, back = f"s3://{BUCKET}/transfer/{src.name}", work / f"back-{src.name}"
    env = with_env(dict(os.environ), server.env)
    up = run_probe("upload", src, uri, env)
    server_rss = server.rss()  # the object stored
    down = run_probe("download", uri, back, env)
    whole = back.stat().st_size == size
    back.unlink()
    with env_applied(server.env):
        Storage().delete(uri)
    return {
        "upload_MBps": size / up["seconds"] / 1e6,
        "download_MBps": size / down["seconds"] / 1e6,
        "upload": up,
        "download": down,
        "server_rss": server_rss,
        "downloaded_whole": whole,
    }


def checkpoint_stall(server: Server, work: Path, channels: str) -> dict:
    """One async-checkpoint training run against ``server`` (its own inputs and Ray, stopped afterwards: a Ray
    keeps the endpoint it was started with)."""
    import ray

    with env_applied(server.env):
        try:
            inputs = work / f"ckpt-{server.name}"
            inputs.mkdir(exist_ok=True)
            overrides = prepare_inputs(inputs, f"s3://{BUCKET}/root")
            return fit(overrides, "async", steps=1, checkpoint_every=1, channels=channels)
        finally:
            ray.shutdown()


def fmt_size(size: int) -> str:
    return f"{size / (1024 * MIB):g} GiB" if size >= 1024 * MIB else f"{size / MIB:g} MiB"


def table(transfers: dict[int, dict[str, dict]], stalls: dict[str, dict], channels: str) -> str:
    """The results side by side: per size, each server's row and the SeaweedFS / moto ratios; then the stalls."""
    lines = [
        "transfers through Storage.upload_file / download_file, each in a fresh process (MB = 10^6 bytes)",
        f"{'object':>9}  {'server':<11}{'up MB/s':>9}{'down MB/s':>11}  {'client peak RSS MB (growth) up / down':<40}"
        f"{'server RSS MB':>13}",
    ]
    for size, rows in transfers.items():
        for name, r in rows.items():
            rss = " / ".join(
                f"{r[d]['rss_peak'] / 1e6:.0f} (+{r[d]['rss_growth'] / 1e6:.0f})"
                for d in ("upload", "download")
            )
            lines.append(
                f"{fmt_size(size) if name == 'seaweedfs' else '':>9}  {name:<11}{r['upload_MBps']:>9.1f}"
                f"{r['download_MBps']:>11.1f}  {rss:<40}{r['server_rss'] / 1e6:>13.0f}"
                + ("" if r["downloaded_whole"] else "  download incomplete!")
            )
        sw, mo = rows["seaweedfs"], rows["moto"]
        lines.append(
            f"{'':>9}  {'ratio s/m':<11}{sw['upload_MBps'] / mo['upload_MBps']:>9.2f}"
            f"{sw['download_MBps'] / mo['download_MBps']:>11.2f}"
        )
    lines.append(f"checkpoint stall, train.checkpoint_upload=async, one checkpoint (UNet [{channels}]):")
    for name, r in stalls.items():
        lines.append(
            f"  {name:<11}checkpoint {r['checkpoint_bytes'] / 1e6:.0f} MB, stall {r['mean_stall_s']:.2f} s, "
            f"fit {r['wall_s']:.1f} s"
        )
    sw, mo = stalls["seaweedfs"], stalls["moto"]
    lines.append(
        f"  {'ratio s/m':<11}stall {sw['mean_stall_s'] / mo['mean_stall_s']:.2f}, "
        f"fit {sw['wall_s'] / mo['wall_s']:.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    local_ray_defaults(own_tracking=True)
    work = work_dir(args.work_dir, "asva-bench-storage-")
    try:
        run(args, work)
    finally:
        if not args.work_dir:  # GBs of objects and server data: kept only when asked for
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    sizes = [int(s) * MIB for s in args.sizes.split(",")]
    transfers: dict[int, dict[str, dict]] = {}
    stalls: dict[str, dict] = {}
    with ExitStack() as stack:
        servers = [stack.enter_context(seaweedfs(work)), stack.enter_context(moto(work))]
        for size in sizes:
            src = random_file(work / f"object-{size // MIB}MiB.bin", size)
            transfers[size] = {}
            for server in servers:
                transfers[size][server.name] = transfer(server, src, work)
                print(f"transfers of {fmt_size(size)} on {server.name} done", flush=True)
            src.unlink()
        for server in servers:
            stalls[server.name] = checkpoint_stall(server, work, args.channels)
    print("\n" + table(transfers, stalls, args.channels))
    path = write_results(
        "storage",
        {
            "transfers": {str(size): rows for size, rows in transfers.items()},
            "checkpoint_stall": stalls,
            "args": vars(args),
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
