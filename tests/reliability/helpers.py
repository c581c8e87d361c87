"""Shared set-up for the reliability tests that need their own servers and a small latent cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.experiment import load_experiment
from asva_platform.preprocess.job import build_cache, prepare, run_sequential
from asva_platform.storage import Storage

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")


def tiny_cache(work: Path, root: str, mlflow_uri: str) -> tuple[list[str], Storage]:
    """A synthetic AVSync15 (1 clip per class, 16x16) and its latent cache under ``root``; returns the
    overrides a training job needs (cache included) and the storage."""
    _, overrides = tiny_inputs(work, clips_per_class=1, max_duration=3.0, image_size=16)
    overrides += [f"storage.root={root}", "preprocess.windows_per_clip=1", f"tracking.uri={mlflow_uri}"]
    cfg = load_experiment(TINY, overrides)
    storage = Storage.from_config(cfg.storage)
    prep = prepare(cfg, storage, log=lambda _: None)
    build_cache(prep, run_sequential, log=lambda _: None)
    return [*overrides, f"train.cache={prep.cache_id}"], storage


def job_env(mlflow_uri: str) -> tuple[dict[str, str], Path]:
    """Env for a job subprocess that starts its own local Ray under a fresh, short RAY_TMPDIR (AF_UNIX socket
    paths must stay under 107 bytes)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="asva-rel-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "MLFLOW_TRACKING_URI": mlflow_uri}
    env.pop("RAY_ADDRESS", None)
    return env, ray_tmp
