"""Case 9, load: the preprocessing job over a full-size synthetic AVSync15 (100 clips x 15 classes = 1,500
clips, 2-10 s each) on the shared 4-logical-CPU local Ray. While it runs, a sampler records the peak RSS of
this process plus every Ray process, and Ray's own object-store figures (plasma in use, spilled to disk).

Bound (docs/reliability.md): the job completes with every clip cached or skipped, and spills at most
``SPILL_BOUND_MIB`` to disk: the streaming pipeline keeps a few decoded clips in flight, so spilling beyond
that means back-pressure broke. The measured figures are printed for the report (``-s``).
Slow: tens of minutes on 2 cores; run with ``make test-reliability``.
"""

from __future__ import annotations

import json
import re
import threading
import time

import psutil
import pytest

from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.errors import run_guarded
from jobs.preprocess import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIPS_PER_CLASS = 100
SPILL_BOUND_MIB = 256


class Sampler(threading.Thread):
    """Peak RSS of this process + Ray's processes, peak plasma use and spilled MiB, once a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_rss = 0
        self.peak_plasma_mib = 0.0
        self.spilled_mib = 0.0

    def run(self) -> None:
        import ray
        from ray._private.internal_api import memory_summary

        raylet = ray._private.worker.global_worker.node.all_processes["raylet"][0].process.pid
        while not self.stop.is_set():
            procs = [psutil.Process()]
            try:
                procs += psutil.Process(raylet).children(recursive=True) + [psutil.Process(raylet)]
            except psutil.NoSuchProcess:
                pass
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            try:
                text = memory_summary(stats_only=True)
                used = re.search(r"Plasma memory usage (\d+) MiB", text)
                spilled = re.search(r"Spilled (\d+) MiB", text)
                if used:
                    self.peak_plasma_mib = max(self.peak_plasma_mib, float(used.group(1)))
                if spilled:
                    self.spilled_mib = max(self.spilled_mib, float(spilled.group(1)))
            except Exception:
                pass
            self.stop.wait(1.0)


def test_full_size_synthetic_avsync15_within_object_store(s3_server, ray_cluster, tmp_path, capsys):
    _, overrides = tiny_inputs(tmp_path, clips_per_class=CLIPS_PER_CLASS, max_duration=10.0, image_size=64)
    config = tmp_path / "load.yaml"
    config.write_text("name: load\n")
    overrides += [
        f"storage.root=s3://{s3_server.bucket}/load-{tmp_path.name}",
        "tracking.required=false",
        "preprocess.windows_per_clip=2",
    ]
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    rc = run_guarded(main, ["--config", str(config), "--json", *overrides])
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join(timeout=10)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    result = json.loads(captured.out.strip().splitlines()[-1])
    store_mib = ray_cluster.cluster_resources().get("object_store_memory", 0) / 2**20
    figures = {
        "clips": result["clips"],
        "skipped": len(result["skipped"]),
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(sampler.peak_rss / 2**30, 2),
        "peak_plasma_mib": sampler.peak_plasma_mib,
        "object_store_mib": round(store_mib),
        "spilled_mib": sampler.spilled_mib,
    }
    with capsys.disabled():
        print(f"\nload figures: {json.dumps(figures)}")
    assert result["clips"] + len(result["skipped"]) == CLIPS_PER_CLASS * 15
    assert sampler.spilled_mib <= SPILL_BOUND_MIB, figures
