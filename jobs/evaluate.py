"""``python -m jobs.evaluate --config <file> [--checkpoint REF] [dotted overrides] [--json]``: evaluate a checkpoint.

REF is `init`, a storage URI/path of an exported UNet folder or a training checkpoint, or an MLflow run id
of a training run (default: ``eval.checkpoint``). Generates the paper's test windows, writes them as mp4,
re-decodes and scores them, and logs ``eval/*`` metrics + a per-class table to MLflow (docs/evaluation.md).
With ``--json`` the last stdout line is one JSON object: name, eval_id, eval_uri, checkpoint, metrics,
num_clips, clips_generated, skipped, seconds, workers, parallel, mlflow_run_id.
"""

from __future__ import annotations

import sys

from asva_platform.errors import run_guarded
from asva_platform.job_cli import checked_only, job_parser, print_result


def parse_args(argv: list[str] | None):
    p = job_parser("jobs.evaluate", __doc__, "eval.audio_guidance_scale=8")
    p.add_argument("--checkpoint", default=None, help="init | storage URI | MLflow run id (sets eval.checkpoint)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from asva_platform.config import replace_dotted
    from asva_platform.evaluation.job import run_evaluate_job
    from asva_platform.schema import load_experiment

    cfg = load_experiment(args.config, args.overrides)
    if args.checkpoint:  # set as given: a run id must not go through YAML number parsing
        cfg = replace_dotted(cfg, {"eval.checkpoint": args.checkpoint}, "--checkpoint")
    if checked_only(args, cfg.name):
        return 0
    result = run_evaluate_job(cfg)
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
