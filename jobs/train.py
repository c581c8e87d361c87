"""``python -m jobs.train --config <file> [dotted overrides] [--json]``: train AVSyncD with Ray Train + DeepSpeed.

Checkpoints go to ``<storage.root>/runs/<name>/``; re-running with the same ``name`` resumes that run (and
its MLflow run). With ``--json`` the last stdout line is one JSON object: run_id (MLflow), checkpoint_uri,
final_step, final_loss, samples_per_s (plus export_uri, export_ema_uri). See docs/training.md.
"""

from __future__ import annotations

import sys

from asva_platform.errors import run_guarded
from asva_platform.job_cli import checked_only, job_parser


def parse_args(argv: list[str] | None):
    p = job_parser("jobs.train", __doc__, "train.cache=<cache_id> train.zero_stage=3")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from asva_platform.cluster import apply_runtime_defaults

    apply_runtime_defaults()  # before ray/deepspeed are imported
    import ray

    from asva_platform.schema import load_experiment
    from asva_platform.training.trainer import result_line, run_training

    cfg = load_experiment(args.config, args.overrides)
    if checked_only(args, cfg.name):
        return 0
    started_ray = not ray.is_initialized()
    result = run_training(cfg)
    if started_ray:
        ray.shutdown()  # flushes worker log lines, so the JSON below really is the last line
    if args.json:
        print(result_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
