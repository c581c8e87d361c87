"""The evaluation job (``python -m jobs.evaluate``): evaluate a checkpoint and log it to MLflow.

Which run gets the numbers: with a training run's id as the checkpoint and ``eval.log_to:
checkpoint_run`` (the default) that run itself; otherwise a new run in ``tracking.experiment`` with the
config as params, tagged ``asva.evaluated_run`` (the training run, when known) and ``asva.eval.checkpoint``.
Storage, the tracking server, the checkpoint, metric weights and the dataset are all checked before
any Ray resources are taken; a new run is created only after those checks pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asva_platform.artifacts.checkpoint_ref import resolve_checkpoint
from asva_platform.artifacts.evaluation import PER_CLASS_TABLE, artifact_dir, log_evaluation
from asva_platform.evaluation.runner import (
    EvalResult,
    check_sync_shift,
    evaluate_checkpoint,
    prepare_evaluation,
    run_evaluation,
)
from asva_platform.storage import Storage
from asva_platform.tracking import (
    TAG_EVAL_CHECKPOINT,
    TAG_EVALUATED_RUN,
    resolve_tracking_uri,
    run_status,
    start_run,
    ui_url,
)

__all__ = ["Result", "run", "evaluate_checkpoint", "prepare_evaluation", "check_config"]

check_config = check_sync_shift
"""What the config alone shows evaluation cannot run with (``jobs.evaluate --check``)."""
"""The stage's entry (:func:`run`), and the two pieces sweeps drive per trial (checks first, then one evaluation)."""

JOB = "evaluate"
Result = EvalResult


def describe_evaluation(cfg, checkpoint_ref: str, name: str) -> str:
    """An evaluation run's description in the MLflow UI: what was evaluated, how, and where to read it."""
    e = cfg.eval
    videos = f"{e.max_videos} test videos" if e.max_videos else "every test video"
    return (f"Evaluation of `{checkpoint_ref}` under the **{cfg.protocol}** protocol: "
            f"{', '.join(e.metrics.metrics)} on {videos}, audio guidance {e.audio_guidance_scale:g}, "
            f"{e.num_inference_steps} sampling steps.\n"
            f"- metrics: `eval/*`; per-class table: artifact `{artifact_dir(name)}/{PER_CLASS_TABLE}`")


def run(cfg, log: Callable[[str], None] = print) -> Result:
    """The whole job for a loaded ExperimentConfig (``eval.checkpoint`` names what to evaluate)."""
    from mlflow.tracking import MlflowClient


    started = time.perf_counter()
    storage = Storage.from_config(cfg.storage)
    tracking_uri = resolve_tracking_uri(cfg.tracking)
    checkpoint = resolve_checkpoint(cfg.eval.checkpoint, storage, tracking_uri)
    prep = prepare_evaluation(cfg, checkpoint, storage, log)

    if checkpoint.run_id and cfg.eval.log_to == "checkpoint_run":
        client, run_id, own_run = MlflowClient(tracking_uri=tracking_uri), checkpoint.run_id, False
    else:
        tags = {TAG_EVAL_CHECKPOINT: checkpoint.ref, TAG_EVALUATED_RUN: checkpoint.run_id}
        client, run_id = start_run(tracking_uri, cfg.tracking.experiment, f"eval-{prep.name}", cfg, tags=tags, job=JOB,
                                   description=describe_evaluation(cfg, checkpoint.ref, prep.name))
        own_run = True
    log(f"evaluate: logging to MLflow run {run_id} at {tracking_uri}")
    with run_status(client, run_id, close=own_run):
        result = run_evaluation(prep, log=log, started=started)
        result.mlflow_run_id = run_id
        log_evaluation(client, run_id, result)
        result.mlflow_url = ui_url(tracking_uri, client.get_run(run_id).info.experiment_id, run_id,
                                   f"{artifact_dir(result.name)}/{PER_CLASS_TABLE}")
    return result
