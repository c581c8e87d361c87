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
from asva_platform.evaluation import job as evaluation
from asva_platform.job_cli import StageJob

JOB = StageJob(
    "jobs.evaluate",
    __doc__,
    lambda experiment, args: evaluation.run(experiment),
    override_example="generate.audio_guidance_scale=8",
    checkpoint_option=True,
    check_config=evaluation.check_config,
)
main = JOB.main


if __name__ == "__main__":
    sys.exit(run_guarded(JOB.main, sys.argv[1:]))
