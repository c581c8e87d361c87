"""``python -m jobs.preprocess --config <file> [dotted overrides] [--json]``: build the latent cache.

Reads AVSync15 (local or s3://), writes ``<storage.root>/caches/<cache_id>/`` (docs/preprocess.md).
With ``--json`` the last stdout line is one JSON object: cache_uri, cache_id, clips, windows, rows,
skipped [{path, reason, ...}], seconds (plus samples, bytes_written, clips_per_s, noop, mlflow_run_id ...).
"""

from __future__ import annotations

import sys

from asva_platform.errors import run_guarded
from asva_platform.job_cli import StageJob
from asva_platform.preprocess import job as preprocess

JOB = StageJob(
    "jobs.preprocess",
    __doc__,
    lambda experiment, args: preprocess.run(experiment),
    override_example="dataset.root=s3://bucket/AVSync15",
)
main = JOB.main


if __name__ == "__main__":
    sys.exit(run_guarded(JOB.main, sys.argv[1:]))
