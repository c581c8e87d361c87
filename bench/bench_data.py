"""Data-layer throughput on ONE core: clips decoded + sampled per second.

    python bench/bench_data.py [--root DATASET] [--clips 30] [--size 256]

Without ``--root`` it generates (once, cached under ``bench/results/``) a synthetic AVSync15 with 2 clips
per class at the default 2-10 s durations. Every number comes from this one run, on one thread:

* ``sample_clip``: the paper's path, one random 2-s training window per decode (seek + decode + resize +
  16 kHz audio + mel);
* ``sample_grid_windows``: the cache builder's path, every 6-fps grid window of a video from one decode;
* ``probe``: headers only.
"""

from __future__ import annotations

import os

# one core: fix every thread pool before numpy/torch/numba load
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from asva_model.data.avsync15 import read_split  # noqa: E402
from asva_model.data.config import DatasetConfig, SamplingConfig  # noqa: E402
from asva_model.data.sampling import probe, sample_clip, sample_grid_windows, train_window_start  # noqa: E402
from asva_platform.dev.synth import synthesize  # noqa: E402


def _timed(fn, items) -> tuple[float, float, int]:
    """(wall s, CPU s of this process, count). Everything runs on one thread, so CPU seconds are what one
    dedicated core would need even when other work shares the machine."""
    t, c = time.perf_counter(), time.process_time()
    n = sum(fn(x) for x in items)
    return time.perf_counter() - t, time.process_time() - c, n


def _rate(name: str, n: int, wall: float, cpu: float, unit: str = "clips") -> str:
    return f"  {name:<30}{n / cpu:8.1f} {unit}/CPU-s   {n / wall:8.1f} {unit}/s wall   ({1000 * cpu / n:6.1f} ms CPU each)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", help="dataset root (default: a generated synthetic AVSync15)")
    p.add_argument("--clips", type=int, default=30, help="videos to use (default 30)")
    p.add_argument("--size", type=int, default=256, help="output frame size (default 256, the paper's)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    root = a.root
    if root is None:
        out = Path(__file__).resolve().parent / "results" / "synth_bench"
        t = time.perf_counter()
        s = synthesize(out, clips_per_class=2, seed=0, workers=1)
        gen = "reused" if s.reused else f"generated on 1 process in {time.perf_counter() - t:.1f} s wall"
        print(f"dataset: synthetic, {s.num_clips} clips, {s.total_duration / s.num_clips:.2f} s mean ({gen})")
        root = s.out_dir
    entries = (
        read_split(DatasetConfig(root=str(root)), "train").entries
        + read_split(DatasetConfig(root=str(root)), "test").entries
    )
    paths = [str(Path(root) / e.path) for e in entries][: a.clips]
    cfg = SamplingConfig(image_size=[a.size, a.size])
    infos = {p: probe(p, cfg) for p in paths}  # warm-up (imports, codec init) outside the timings
    sample_clip(paths[0], 0.0, cfg)
    rng = np.random.default_rng(0)
    starts = {p: train_window_start(infos[p].duration, rng, cfg) for p in paths}

    w_probe, c_probe, n_probe = _timed(lambda p: probe(p, cfg) is not None, paths)
    w_one, c_one, n_one = _timed(lambda p: sample_clip(p, starts[p], cfg, flip=True) is not None, paths)
    w_grid, c_grid, n_grid = _timed(lambda p: len(sample_grid_windows(p, cfg)), paths)
    video_s = sum(infos[p].duration for p in paths)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print(
        f"one thread (torch threads = {torch.get_num_threads()}), {len(paths)} videos, {video_s:.0f} s of video, "
        f"output {a.size}x{a.size}; load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    print(_rate("probe (headers)", n_probe, w_probe, c_probe, "videos"))
    print(_rate("sample_clip (1 window/decode)", n_one, w_one, c_one))
    print(
        _rate("sample_grid_windows", n_grid, w_grid, c_grid) + f"  [{n_grid / len(paths):.1f} windows/video]"
    )
    print(f"  ratio grid / per-window: {(n_grid / c_grid) / (n_one / c_one):.2f}x clips per CPU-second")


if __name__ == "__main__":
    main()
