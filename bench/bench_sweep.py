"""Sweep benchmark: compute ASHA spends to reach the grid's best metric, as a share of the grid's compute.

The same train sweep (a learning-rate grid on the tiny recipe, trials one at a time in the listed order)
runs twice in one process on one local Ray, through the real sweep job (``run_sweep``: Tune, Train V2 +
DeepSpeed, MLflow): once with FIFO -- every trial trains to ``max_steps``, the grid -- and once with ASHA.
Compute is counted in optimizer steps (every step has the same batch and model, so the same cost); trial
wall time (Tune's ``time_total_s``, which also holds each fit's start-up) is shown next to it.

* ``grid best``: the lowest final loss of the FIFO run;
* ASHA ``reaches`` it when a trial that trained to the full budget ends within ``--tolerance`` (relative)
  of it -- the same configuration trained twice differs a little (data order), hence a tolerance;
* ratio = steps ASHA had spent (all trials so far, in execution order) when it reached the grid's best,
  divided by the grid's steps; the goal is <= 0.5. ASHA's total steps / the grid's are shown too.

Nothing is asserted; results go to stdout and bench/results/sweep.json.
``python -m bench sweep`` or ``python -m bench.bench_sweep [--lrs ...] [--max-steps N] ...``
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from bench.common import local_ray_defaults, work_dir, write_results
from sweeps.mlflow_sweep import trial_index
from sweeps.spec import load_sweep
from sweeps.tune_runner import run_sweep

REPO = Path(__file__).resolve().parents[1]
# Learning rates in the order trials run (a fixed shuffle of a log grid: a grid is not sorted by quality).
DEFAULT_LRS = "1e-4,3e-3,1e-6,1e-3,1e-5,3e-4"


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="bench_sweep", description=__doc__.splitlines()[0])
    p.add_argument("--lrs", default=DEFAULT_LRS, help="comma-separated learning rates, in trial order")
    p.add_argument("--max-steps", type=int, default=8, help="optimizer steps of a full trial")
    p.add_argument("--grace", type=int, default=2, help="ASHA grace period (steps)")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    p.add_argument("--tolerance", type=float, default=0.01, help="relative tolerance on the grid's best loss")
    p.add_argument("--image-size", type=int, default=32, help="frame size (the tiny VAE halves it)")
    p.add_argument("--clips-per-class", type=int, default=2, help="synthetic clips per class (15 classes)")
    p.add_argument("--windows-per-clip", type=int, default=2, help="cached windows per clip")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    p.add_argument("--work-dir", default="", help="keep inputs here (default: a temp dir, removed)")
    return p.parse_args(argv)


def run(base_overrides: list[str], scheduler: str, args, tag: str):
    """One sweep; returns its trial rows in execution order."""

    lrs = ", ".join(
        f"{float(x):.3e}" for x in args.lrs.split(",")
    )  # YAML reads 1e-4 as text, 1.000e-04 as a number
    loaded = load_sweep(
        REPO / "sweeps" / "train_tiny.yaml",
        [
            *[f"base.{o}" for o in base_overrides],
            f"name=bench-{scheduler}-{tag}",
            f"search_space={{train.lr: {{grid: [{lrs}]}}}}",
            f"scheduler.type={scheduler}",
            f"scheduler.grace_period={args.grace}",
            f"scheduler.reduction_factor={args.reduction_factor}",
            f"base.train.max_steps={args.max_steps}",
            f"base.train.checkpoint_every={args.max_steps}",
        ],
    )
    t0 = time.perf_counter()
    result = run_sweep(loaded, log=lambda _: None)
    wall = time.perf_counter() - t0
    rows = sorted(result.trials, key=lambda r: trial_index(r.trial_id))
    print(f"{scheduler}: {len(rows)} trials in {wall:.0f}s", flush=True)
    return rows, wall


def steps_of(row) -> int:
    return int(row.metrics.get("step", 0))


def compare(grid_rows, asha_rows, args) -> dict:
    grid_steps = sum(steps_of(r) for r in grid_rows)
    asha_steps = sum(steps_of(r) for r in asha_rows)
    best = min(grid_rows, key=lambda r: r.metrics["loss"])
    target = best.metrics["loss"] * (1 + args.tolerance)
    spent, reached_at = 0, None
    for row in asha_rows:  # execution order: steps spent so far include every trial started before
        spent += steps_of(row)
        if steps_of(row) >= args.max_steps and row.metrics.get("loss", float("inf")) <= target:
            reached_at = {"run_name": row.run_name, "loss": row.metrics["loss"], "steps_spent": spent}
            break
    return {
        "grid_steps": grid_steps,
        "asha_steps": asha_steps,
        "grid_best": {"run_name": best.run_name, "loss": best.metrics["loss"]},
        "asha_reached": reached_at,
        "asha_steps_to_reach_grid_best_vs_grid": (reached_at["steps_spent"] / grid_steps)
        if reached_at
        else None,
        "asha_total_steps_vs_grid": asha_steps / grid_steps,
        "grid_trial_seconds": sum(r.metrics.get("time_total_s", 0.0) for r in grid_rows),
        "asha_trial_seconds": sum(r.metrics.get("time_total_s", 0.0) for r in asha_rows),
    }


def show_table(grid_rows, asha_rows) -> None:
    print(
        f"\n{'trial':16s}{'grid steps':>11s}{'grid loss':>11s}{'asha steps':>11s}{'asha loss':>11s}  asha status"
    )
    asha = {r.params["train.lr"]: r for r in asha_rows}
    for g in grid_rows:
        a = asha.get(g.params["train.lr"])
        print(
            f"{g.run_name:16s}{steps_of(g):11d}{g.metrics['loss']:11.4f}"
            + (f"{steps_of(a):11d}{a.metrics['loss']:11.4f}  {a.status}" if a else "")
        )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    local_ray_defaults(own_tracking=True)
    work = work_dir(args.work_dir, "asva-bench-sweep-")
    try:
        import ray

        from bench.bench_train import prepare_inputs

        t0 = time.perf_counter()
        inputs = SimpleNamespace(
            clips_per_class=args.clips_per_class,
            image_size=args.image_size,
            windows_per_clip=args.windows_per_clip,
        )
        overrides, cache_id = prepare_inputs(inputs, work)
        print(f"inputs + cache {cache_id}: {time.perf_counter() - t0:.1f}s", flush=True)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        tag = uuid.uuid4().hex[:6]
        grid_rows, grid_wall = run(overrides, "fifo", args, tag)
        asha_rows, asha_wall = run(overrides, "asha", args, tag)
        ray.shutdown()
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    out = compare(grid_rows, asha_rows, args)
    out.update(grid_wall_s=grid_wall, asha_wall_s=asha_wall)
    show_table(grid_rows, asha_rows)
    print(f"\n{'':44s}{'grid':>10s}{'asha':>10s}")
    print(f"{'optimizer steps':44s}{out['grid_steps']:10d}{out['asha_steps']:10d}")
    print(
        f"{'trial seconds (Tune time_total_s)':44s}{out['grid_trial_seconds']:10.0f}{out['asha_trial_seconds']:10.0f}"
    )
    print(f"{'sweep wall seconds':44s}{grid_wall:10.0f}{asha_wall:10.0f}")
    print(f"grid best: {out['grid_best']['run_name']} loss {out['grid_best']['loss']:.4f}")
    ratio = out["asha_steps_to_reach_grid_best_vs_grid"]
    if ratio is None:
        print("ASHA did not reach the grid's best loss (it stopped that configuration early)")
    else:
        print(
            f"ASHA reached it with {out['asha_reached']['run_name']} (loss {out['asha_reached']['loss']:.4f})"
        )
        print(f"{'ASHA steps to reach grid best / grid steps':44s}{ratio:10.3f}  goal <= 0.5")
    print(f"{'ASHA total steps / grid steps':44s}{out['asha_total_steps_vs_grid']:10.3f}")
    write_results(
        "sweep",
        {
            "args": vars(args),
            **out,
            "grid": [vars(r) for r in grid_rows],
            "asha": [vars(r) for r in asha_rows],
        },
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
