"""Case 3, preprocessing killed mid-run: the job's driver is SIGKILLed (as an OOM kill or a lost pod would)
once some shards are on S3. A re-run completes; the shards that were already there are not rewritten (same
ETag and modification time); the manifest has every window exactly once; and every shard object that was
ever visible is a complete, readable Parquet file of this cache (S3 PUTs are atomic; nothing partial)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from asva_platform.artifacts import cache as fmt
from asva_platform.artifacts.cache import open_cache
from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.dev.services import kill_tree
from asva_platform.experiment import load_experiment
from asva_platform.preprocess.job import existing_shards, prepare
from asva_platform.storage import Storage, join, parse_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def shard_objects(storage: Storage, cache_uri: str) -> dict[str, tuple[str, object]]:
    u = parse_uri(join(cache_uri, fmt.SHARDS_DIR))
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=u.bucket, Prefix=u.key + "/")
    return {o["Key"]: (o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", [])}


def test_killed_preprocessing_reruns_only_missing_shards(s3_server, tmp_path):
    _, overrides = tiny_inputs(tmp_path, clips_per_class=2, max_duration=3.0, image_size=32)
    config = tmp_path / "pp.yaml"
    config.write_text("name: pp-killed\n")
    overrides += [
        f"storage.root=s3://{s3_server.bucket}/pp-killed-{tmp_path.name}",
        "preprocess.windows_per_clip=2",
        "preprocess.clips_per_shard=2",
        "tracking.required=false",
        "cluster.num_cpus=4",
    ]
    cfg = load_experiment(str(config), overrides)
    storage = Storage.from_config(cfg.storage)
    prep = prepare(cfg, storage, log=lambda _: None)
    total = len(prep.shards)

    ray_tmp = tempfile.mkdtemp(prefix="asva-pk-", dir="/tmp")  # AF_UNIX socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "jobs.preprocess", "--config", str(config), "--json", *overrides]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    seen: dict[str, tuple] = {}
    family: list[psutil.Process] = []
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            seen = shard_objects(storage, prep.cache_uri)
            if 1 <= len(seen) < total:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job ended before it could be killed mid-run"
        assert 1 <= len(seen) < total
        family = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies without any cleanup
        proc.wait(timeout=30)
    finally:
        kill_tree(proc.pid)
        for child in family:
            kill_tree(child.pid)  # the local Ray the dead driver started
    after_kill = shard_objects(storage, prep.cache_uri)
    assert not storage.exists(join(prep.cache_uri, fmt.MANIFEST)), "a killed run must not leave a manifest"
    # every shard visible after the kill is complete and belongs to this cache
    done_before = existing_shards(prep)
    assert len(done_before) == len(after_kill), "a partial/foreign shard object is visible"

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    final = shard_objects(storage, prep.cache_uri)
    assert len(final) == total
    for key, stamp in after_kill.items():
        assert final[key] == stamp, f"{key} was rewritten although it was complete"

    handle = open_cache(storage, result["cache_id"], cfg.storage.cache_root)
    rows = [r["window_id"] for split in cfg.preprocess.splits for r in handle.iter_rows(split)]
    assert len(rows) == len(set(rows)) == handle.manifest.totals.rows == result["rows"]
    shard_paths = [s.path for split in handle.manifest.splits.values() for s in split.shards]
    assert len(shard_paths) == len(set(shard_paths)) == total
