"""Evaluation benchmark: clips/s of ``evaluate_checkpoint`` on Ray actors vs in this process, in one run, on the
same synthetic test videos with the tiny real-format AVSyncD and metric networks.

Both sides evaluate from scratch (own output root, so no clip is reused) and are timed end to end: model and
metric-network loading, generation, mp4 writing, re-decoding, scoring and the reduction (the Ray side also
pays for starting its actors; ``ray.init`` is excluded: jobs run on an already running cluster). Both must
produce the same per-clip sync scores (each clip is generated from the same seed, whatever worker runs it).
Also reports where a clip's time goes (generation vs scoring).

``python -m bench evaluate`` or ``python -m bench.bench_evaluate [--videos N] [--actors N] ...``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numpy as np

from asva_platform.dev.fixtures import tiny_eval_overrides
from asva_platform.dev.ray_local import use_private_local_ray
from asva_platform.evaluation.job import evaluate_checkpoint
from asva_platform.experiment import load_experiment
from bench.common import work_dir, write_results


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench_evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=4, help="test videos (3 clips each)")
    p.add_argument("--image-size", type=int, default=64, help="frame size")
    p.add_argument("--steps", type=int, default=4, help="PNDM steps")
    p.add_argument(
        "--metrics", default="fid,fvd,ia,it,relsync,alignsync,sync", help="comma-separated metrics"
    )
    p.add_argument("--actors", type=int, default=2, help="Ray actors")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    p.add_argument("--work-dir", default="", help="keep inputs here (default: a temp dir, removed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    use_private_local_ray()  # on 127.0.0.1, with a token of its own
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    work = work_dir(args.work_dir, "bench-evaluate-")
    quiet = lambda _msg: None  # noqa: E731
    try:
        t0 = time.perf_counter()
        overrides = tiny_eval_overrides(work, clips_per_class=2, image_size=args.image_size, steps=args.steps)
        print(f"inputs ready in {time.perf_counter() - t0:.1f} s at {work}", flush=True)
        common = [*overrides, f"eval.max_videos={args.videos}", f"eval.metrics.metrics=[{args.metrics}]"]
        seq_cfg = load_experiment(None, [*common, f"storage.root={work}/store-seq", "eval.parallel=false"])
        seq = evaluate_checkpoint(seq_cfg, log=quiet)

        import ray

        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            ray_cfg = load_experiment(
                None,
                [
                    *common,
                    f"storage.root={work}/store-ray",
                    "eval.parallel=true",
                    f"eval.num_workers={args.actors}",
                    f"eval.cpus_per_worker={args.num_cpus // args.actors}",
                ],
            )
            par = evaluate_checkpoint(ray_cfg, log=quiet)
        finally:
            ray.shutdown()

        with (
            np.load(f"{seq.record.eval_uri}/scores.npz") as a,
            np.load(f"{par.record.eval_uri}/scores.npz") as b,
        ):
            gap = float(np.abs(a["sync"] - b["sync"]).max()) if "sync" in a.files else 0.0
        n = len(seq.record.clips)
        seq_cps, par_cps = n / seq.seconds, n / par.seconds
        out = {
            "videos": len({c.video for c in seq.record.clips}),
            "clips": n,
            "image_size": args.image_size,
            "steps": args.steps,
            "metrics": args.metrics.split(","),
            "in_process_s": round(seq.seconds, 2),
            "in_process_clips_per_s": round(seq_cps, 4),
            "ray_s": round(par.seconds, 2),
            "ray_clips_per_s": round(par_cps, 4),
            "ray_actors": par.workers,
            "ray_vs_in_process": round(par_cps / seq_cps, 2),
            "generate_s_per_clip": round(seq.generate_seconds / n, 3),
            "score_s_per_clip": round(seq.score_seconds / n, 3),
            "max_sync_score_gap": gap,
            "cpu_count": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print(f"{'':24}{'in process':>12}{'ray actors':>12}")
        print(f"{'seconds':24}{seq.seconds:12.1f}{par.seconds:12.1f}")
        print(f"{'clips/s':24}{seq_cps:12.3f}{par_cps:12.3f}")
        print(
            f"ray ({par.workers} actors) vs in process: {par_cps / seq_cps:.2f}x clips/s end to end ({n} clips, "
            f"{args.image_size}px, {args.steps} PNDM steps; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs)"
        )
        print(
            f"in process, per clip: generation + mp4 + re-decode {out['generate_s_per_clip']:.2f} s, "
            f"scoring {out['score_s_per_clip']:.2f} s; largest per-clip sync difference between sides {gap:.2g}"
        )
        print(f"results: {write_results('evaluate', out)}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
