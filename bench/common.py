"""What the Ray benchmarks share: process defaults, a work directory, and the results file."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from asva_platform.dev.ray_local import use_private_local_ray

RESULTS_DIR = Path(__file__).parent / "results"


def local_ray_defaults(own_tracking: bool = False) -> None:
    """Env for a benchmark's local Ray (see README gotchas; on 127.0.0.1 with a token of its own, as the local
    stack's); ``own_tracking`` drops any MLflow server URI so the benchmark logs to its own sqlite store."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    use_private_local_ray()
    if own_tracking:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def work_dir(given: str | None, prefix: str) -> Path:
    """``given`` (kept afterwards) or a new temporary directory."""
    work = Path(given or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def write_results(name: str, out: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``; returns its path."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a spawned process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_local_group(rank: int, world: int, port: int) -> None:
    """Join a gloo process group of ``world`` spawned ranks on this machine, one thread each (what a Ray Train
    worker with 1 CPU gets), with the env Ray Train sets and DeepSpeed checks."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
