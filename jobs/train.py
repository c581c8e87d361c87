"""``python -m jobs.train --config <file> [dotted overrides] [--json]``: train AVSyncD with Ray Train + DeepSpeed.

Checkpoints go to ``<storage.root>/runs/<name>/``; re-running with the same ``name`` resumes that run (and
its MLflow run). With ``--json`` the last stdout line is one JSON object: run_id (MLflow), checkpoint_uri,
final_step, final_loss, samples_per_s (plus export_uri, export_ema_uri). See docs/training.md.
"""

from __future__ import annotations

import sys

from asva_platform.errors import run_guarded
from asva_platform.job_cli import StageJob
from asva_platform.training import job as training

JOB = StageJob(
    "jobs.train",
    __doc__,
    lambda experiment, args: training.run(experiment),
    override_example="train.cache=<cache_id> train.zero_stage=3",
    check_config=training.check_config,
)
main = JOB.main


if __name__ == "__main__":
    sys.exit(run_guarded(JOB.main, sys.argv[1:]))
