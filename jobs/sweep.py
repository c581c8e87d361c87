"""``python -m jobs.sweep sweeps/<file>.yaml [dotted overrides] [--json]``: a Ray Tune sweep logged to MLflow.

Overrides target the sweep file (``num_samples=8``, ``checkpoint=<run id>``) or, prefixed with ``base.``,
the experiment config the trials start from (``base.train.max_steps=200``). Re-running a sweep whose
driver died resumes it (finished trials are kept, their MLflow runs are not duplicated). With ``--json`` the
last stdout line is one JSON object: experiment, parent_run_id, trials (count), best {params, metric, ...},
comparison (guidance sweeps on Sync: each value's Sync with 95 % intervals, the shifted-audio control, the
win rate, and the per-clip gain over the first value; else null).
Exit code 2 for a bad sweep file or unreachable service (nothing started), 1 when every trial failed.
See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from asva_platform.cluster import apply_runtime_defaults
from asva_platform.errors import run_guarded
from asva_platform.job_cli import add_check_flag, checked_only, ray_running, shutdown_ray_if_started
from sweeps.spec import load_sweep
from sweeps.tune_runner import run_sweep


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(
        prog="python -m jobs.sweep", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("sweep", help="sweep YAML (e.g. sweeps/guidance_scale_tiny.yaml)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides: sweep keys, or base.<key> for the base config"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    add_check_flag(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    apply_runtime_defaults()  # before ray/deepspeed are imported
    args = parse_args(argv)
    loaded = load_sweep(args.sweep, args.overrides)
    if checked_only(args, args.sweep):
        return 0
    was_running = ray_running()
    result = run_sweep(loaded)
    shutdown_ray_if_started(was_running)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    if result.trials and all(t.status == "failed" for t in result.trials):
        print(
            f"error: every trial of sweep {result.experiment} failed (see the trial errors above)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
