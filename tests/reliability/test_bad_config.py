"""Case 5, bad config: each mistake is one ``error: ...`` line (exit 2) before any Ray resources are taken.

The jobs' real ``main`` functions run in a subprocess (all cases in one, see job_probe.py) with
``RAY_TMPDIR`` pointed at an empty folder: Ray creates its session directory there the moment a Ray instance
starts, so an empty folder and ``ray.is_initialized()`` false prove no Ray (hence no Train worker, Tune trial
or job) was started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.job_probe import run_jobs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def storage_overrides(s3_server, mlflow_server):
    return [f"storage.root=s3://{s3_server.bucket}/badcfg", f"tracking.uri={mlflow_server.uri}"]


def sweep_file(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""name: bad-sweep
kind: train
base_config: {TINY}
metric: loss
mode: min
search_space:
  train.learning_rate: {{grid: [1.0e-4, 1.0e-3]}}
search: grid
""")
    return sweep


def test_bad_configs_fail_in_one_line_before_ray(storage_overrides, tmp_path):
    """All cases in one process (each a full job ``main``), so the imports are paid once."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(f"base: {TINY}\ntrain:\n  zero_stage: 4\n")
    train = ["--config", TINY, *storage_overrides]
    cases = {
        "unknown key": ("jobs.train", [*train, "train.lrr=1e-4"], ["train.lrr", "unknown key"]),
        "wrong type": ("jobs.train", [*train, "train.max_steps=many"], ["train.max_steps"]),
        "ZeRO stage 4": (
            "jobs.train",
            [*train, "train.zero_stage=4"],
            ["zero_stage", "must be 0, 1, 2 or 3"],
        ),
        "ZeRO stage 4 in a file": ("jobs.train", ["--config", str(bad_yaml)], ["bad.yaml", "zero_stage"]),
        "negative lr": ("jobs.train", [*train, "train.lr=-1e-4"], ["lr", "must be > 0"]),
        "too many workers": (
            "jobs.train",
            [*train, "train.cache=any", "train.num_workers=64"],
            ["train.num_workers", "64 workers", "cluster has 4"],
        ),
        "missing cache": ("jobs.train", [*train, "train.cache=no-such-cache"], ["no-such-cache"]),
        "no cache": ("jobs.train", train, ["train.cache: set a cache_id or URI"]),
        "sweep over unknown key": (
            "jobs.sweep",
            [str(sweep_file(tmp_path))],
            ["sweep.yaml", "search_space", "train.learning_rate"],
        ),
    }
    run_jobs(cases, tmp_path)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    """The real CLI path (interpreter exit code, nothing on stderr but the error) for one case."""
    ray_tmp = tmp_path / "ray-tmp"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--config", TINY, "train.zero_stage=4"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert not ray_tmp.exists()
