"""``python -m jobs.preprocess --config <file> [dotted overrides] [--json]``: build the latent cache.

Reads AVSync15 (local or s3://), writes ``<storage.root>/caches/<cache_id>/`` (docs/preprocess.md).
With ``--json`` the last stdout line is one JSON object: cache_uri, cache_id, clips, windows, rows,
skipped [{path, reason, ...}], seconds (plus samples, bytes_written, clips_per_s, noop, mlflow_run_id ...).
"""

from __future__ import annotations

import sys

from asva_platform.errors import run_guarded
from asva_platform.job_cli import checked_only, job_parser, print_result


def parse_args(argv: list[str] | None):
    p = job_parser("jobs.preprocess", __doc__, "dataset.root=s3://bucket/AVSync15")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from asva_platform.preprocess.job import run_preprocess
    from asva_platform.schema import load_experiment

    cfg = load_experiment(args.config, args.overrides)
    if checked_only(args, cfg.name):
        return 0
    result = run_preprocess(cfg)
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
