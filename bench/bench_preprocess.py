"""Preprocessing benchmark: clips/s of the Ray Data cache build vs a sequential single-process loop calling
the same stage objects (decode -> encode -> shard writer), in one run, on the same synthetic AVSync15 with
tiny real-format weights. Also reports the cache size per clip.

Both sides build a complete cache from scratch (own storage root) and are timed from the first clip to the
last shard written, model loading included (the Ray side also pays for starting its actors; ``ray.init``
is excluded: jobs run on an already running cluster). The sequential loop runs twice: with 1 torch thread
(one core, a sequential loop in the strict sense) and with torch's default thread count (intra-op
parallelism over every core). The headline ratio is against the faster of the two. CPU seconds of every process
(Ray's daemons and actors included) are metered for both sides: Ray's fixed cost (actor start-up: each
actor imports torch/diffusers and loads its models; daemons) is ~20 CPU-s here, so the workload is sized
(75 clips at 128x128, every window) for that cost to be small next to the work itself.

``python -m bench preprocess`` or ``python -m bench.bench_preprocess [--clips-per-class N] ...``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time

from asva_platform.dev.fixtures import tiny_inputs
from asva_platform.dev.ray_local import use_private_local_ray
from asva_platform.experiment import load_experiment
from asva_platform.preprocess.job import build_cache, prepare, run_ray_pipeline, run_sequential, stage_kwargs
from asva_platform.preprocess.stages import DecodeClips, EncodeWindows, records_to_batch
from asva_platform.storage import Storage
from bench.common import work_dir, write_results


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench_preprocess", description=__doc__.splitlines()[0])
    p.add_argument("--clips-per-class", type=int, default=5, help="synthetic clips per class (15 classes)")
    p.add_argument("--image-size", type=int, default=128, help="frame size (the tiny VAE halves it)")
    p.add_argument("--windows-per-clip", type=int, default=0, help="0 = every grid window")
    p.add_argument("--max-duration", type=float, default=4.0, help="longest synthetic clip, seconds")
    p.add_argument("--decode-concurrency", type=int, default=1)
    p.add_argument("--encode-concurrency", type=int, default=2)
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    p.add_argument("--work-dir", default="", help="keep inputs here (default: a temp dir, removed)")
    return p.parse_args(argv)


def _encode_times(prep) -> dict[int, float]:
    """Seconds to encode one clip with 1 thread and with torch's default (for the printout)."""
    import torch

    decode, encode, _ = stage_kwargs(prep, prep.shards[:1])
    encode["num_threads"] = 0
    batch = DecodeClips(**decode)(records_to_batch(prep.shards[0].tasks[:1]))
    encoder = EncodeWindows(**encode)
    default = torch.get_num_threads()
    times = {}
    for n in sorted({1, default}):
        torch.set_num_threads(n)
        encoder(batch)  # warm-up
        t0 = time.perf_counter()
        encoder(batch)
        times[n] = time.perf_counter() - t0
    torch.set_num_threads(default)
    return times


class CpuMeter:
    """CPU seconds used by this process and all its descendants while active (Ray's daemons and workers
    included). Polled, because an exited Ray worker's time is not added to its parent's children times."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.polls = 0
        self.start: dict[tuple, float] = {}
        self.last: dict[tuple, float] = {}
        self.names: dict[tuple, str] = {}
        self._stop = None

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        self.polls += 1
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                key = (proc.pid, proc.create_time())
                self.last[key] = t.user + t.system
                if key not in self.names or self.polls % 10 == 0:  # ray:: process titles are set after start
                    self.names[key] = (proc.cmdline() or [proc.name()])[0][-50:]
            except psutil.Error:
                pass

    def __enter__(self) -> CpuMeter:
        import threading

        self._poll()
        self.start = dict(self.last)
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self._poll()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    @property
    def seconds(self) -> float:
        return sum(v - self.start.get(k, 0.0) for k, v in self.last.items())

    def by_process(self) -> dict[str, float]:
        """CPU seconds per process name (processes with the same name summed)."""
        out: dict[str, float] = {}
        for k, v in self.last.items():
            name = self.names.get(k, "?")
            out[name] = out.get(name, 0.0) + v - self.start.get(k, 0.0)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    use_private_local_ray()  # on 127.0.0.1, with a token of its own
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    work = work_dir(args.work_dir, "bench-preprocess-")
    try:
        t0 = time.perf_counter()
        _, overrides = tiny_inputs(
            work,
            clips_per_class=args.clips_per_class,
            max_duration=args.max_duration,
            image_size=args.image_size,
        )
        print(f"inputs ready in {time.perf_counter() - t0:.1f} s at {work}", flush=True)
        common = [
            *overrides,
            f"preprocess.windows_per_clip={args.windows_per_clip}",
            f"preprocess.decode_concurrency={args.decode_concurrency}",
            f"preprocess.encode_concurrency={args.encode_concurrency}",
            "preprocess.clips_per_shard=4",
        ]
        storage = Storage()
        quiet = lambda _msg: None  # noqa: E731

        # --- sequential baselines: 1 torch thread, then torch's default
        import torch

        thread_times = _encode_times(
            prepare(load_experiment(None, [*common, f"storage.root={work}/store-probe"]), storage, quiet)
        )
        print(
            "encode of one clip: " + ", ".join(f"{n} thread(s) {t:.2f} s" for n, t in thread_times.items()),
            flush=True,
        )
        default_threads = torch.get_num_threads()
        baselines = {}
        for n in sorted(thread_times):
            torch.set_num_threads(n)
            seq_prep = prepare(
                load_experiment(None, [*common, f"storage.root={work}/store-seq{n}"]), storage, quiet
            )
            with CpuMeter() as seq_meter:
                seq_manifest, result = build_cache(seq_prep, run_sequential, quiet)
            baselines[n] = (result, seq_meter.seconds)
            print(f"sequential, {n} torch thread(s): {result.pipeline_seconds:.1f} s", flush=True)
        torch.set_num_threads(default_threads)
        threads = min(baselines, key=lambda n: baselines[n][0].pipeline_seconds)
        seq, seq_cpu = baselines[threads]

        # --- Ray Data job
        import ray

        t_init = time.perf_counter()
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t_init
        try:
            ray_cfg = load_experiment(None, [*common, f"storage.root={work}/store-ray"])
            ray_prep = prepare(ray_cfg, storage, quiet)
            with CpuMeter() as ray_meter:
                ray_manifest, par = build_cache(ray_prep, run_ray_pipeline, quiet)
            ray_cpu = ray_meter.seconds
        finally:
            ray.shutdown()

        totals = ray_manifest.totals
        assert dataclasses.replace(totals, bytes=0) == dataclasses.replace(seq_manifest.totals, bytes=0), (
            f"both sides must cache the same windows: {totals} vs {seq_manifest.totals}"
        )
        ratio = par.clips_per_s / seq.clips_per_s
        out = {
            "clips": totals.clips,
            "windows": totals.windows,
            "samples": totals.samples,
            "image_size": list(ray_cfg.sampling.image_size),
            "latent": list(ray_manifest.layout.latent),
            "audio_tokens": list(ray_manifest.layout.audio),
            "sequential_s": round(seq.pipeline_seconds, 2),
            "sequential_clips_per_s": round(seq.clips_per_s, 3),
            "sequential_torch_threads": threads,
            "sequential_s_by_threads": {n: round(r.pipeline_seconds, 2) for n, (r, _) in baselines.items()},
            "ray_vs_sequential_by_threads": {
                n: round(r.pipeline_seconds / par.pipeline_seconds, 2) for n, (r, _) in baselines.items()
            },
            "ray_s": round(par.pipeline_seconds, 2),
            "ray_clips_per_s": round(par.clips_per_s, 3),
            "ray_init_s": round(init_s, 2),
            "ray_vs_sequential": round(ratio, 2),
            "sequential_cpu_s": round(seq_cpu, 1),
            "ray_cpu_s": round(ray_cpu, 1),
            "ray_cpu_s_by_process": {k: round(v, 1) for k, v in ray_meter.by_process().items() if v >= 0.1},
            "decode_concurrency": args.decode_concurrency,
            "encode_concurrency": args.encode_concurrency,
            "cache_bytes": totals.bytes,
            "bytes_per_clip": round(totals.bytes / totals.clips),
            "bytes_per_window": round(totals.bytes / totals.windows),
            "cpu_count": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print(f"{'':24}{'sequential':>12}{'ray data':>12}")
        print(f"{'seconds':24}{seq.pipeline_seconds:12.1f}{par.pipeline_seconds:12.1f}")
        print(f"{'clips/s':24}{seq.clips_per_s:12.3f}{par.clips_per_s:12.3f}")
        print(f"{'CPU seconds (all procs)':24}{seq_cpu:12.1f}{ray_cpu:12.1f}")
        print(
            f"ray data vs sequential: {ratio:.2f}x clips/s end to end "
            f"({totals.clips} clips, {totals.windows} windows, {args.decode_concurrency} decode + "
            f"{args.encode_concurrency} encode actors; goal >= 1.7x; load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} CPUs)"
        )
        print(
            "ray data vs the sequential loop with "
            + ", ".join(
                f"{n} torch thread(s): {v:.2f}x" for n, v in out["ray_vs_sequential_by_threads"].items()
            )
        )
        print(
            f"cache size: {out['bytes_per_clip'] / 2**20:.2f} MiB per clip, {out['bytes_per_window'] / 2**10:.0f} KiB "
            f"per window (latent {out['latent']}, audio tokens {out['audio_tokens']}; both flips)"
        )
        print(f"results: {write_results('preprocess', out)}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
