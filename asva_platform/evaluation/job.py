"""The evaluation job (``python -m jobs.evaluate``): evaluate a checkpoint and log it to MLflow.

Which run gets the numbers: with a training run's id as the checkpoint and ``eval.log_to:
checkpoint_run`` (the default) that run itself; otherwise a new run in ``tracking.experiment`` with the
config as params, tagged ``asva.evaluated_run`` (the training run, when known) and ``asva.eval.checkpoint``.
Storage, the tracking server, the checkpoint, metric weights and the dataset are all checked before
any Ray resources are taken; a new run is created only after those checks pass.
Beside the evaluation's record it logs ``eval/<name>/sync_curves.png``: a few clips' audio onsets and the
ground truth's and generated motion on one time axis (:func:`log_sync_plot`).

The job edge: the experiment config is read here and the sections evaluation uses go on as
:class:`~asva_platform.evaluation.runner.EvalSettings`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from asva_platform import sync_curves
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.artifacts.evaluation import (
    PER_CLASS_TABLE,
    EvaluationRecord,
    artifact_dir,
    log_evaluation,
)
from asva_platform.evaluation.runner import (
    EvalResult,
    EvalSettings,
    PreparedEvaluation,
    check_sync_shift,
    prepare_evaluation,
    run_evaluation,
)
from asva_platform.evaluation.runner import evaluate_checkpoint as evaluate_with
from asva_platform.experiment import ExperimentConfig
from asva_platform.inference.checkpoints import resolve_checkpoint
from asva_platform.storage import Storage
from asva_platform.tracking import (
    TAG_EVAL_CHECKPOINT,
    TAG_EVALUATED_RUN,
    LoggedConfig,
    resolve_tracking_uri,
    run_status,
    start_run,
    ui_url,
)

__all__ = [
    "Result",
    "run",
    "prepare",
    "evaluate_checkpoint",
    "settings_of",
    "check_config",
    "log_evaluation",
    "log_sync_plot",
    "log_result",
]
"""The stage's entry (:func:`run`), and what sweeps drive: the checks first, then one evaluation per trial."""

JOB = "evaluate"
Result = EvalResult
SYNC_PLOT = "sync_curves.png"
SYNC_PLOT_CLIPS = 4


def settings_of(experiment: ExperimentConfig, tracking_uri: str | None = None) -> EvalSettings:
    """The sections evaluation uses, from the experiment config (``tracking_uri``: the resolved one, when known)."""
    return EvalSettings(
        experiment.eval,
        experiment.generate,
        experiment.model,
        experiment.sampling,
        experiment.dataset,
        experiment.storage,
        experiment.cluster,
        tracking_uri if tracking_uri is not None else experiment.tracking.resolved_uri(),
        experiment.protocol,
        experiment.protocol_quirks(),
    )


def check_config(experiment: ExperimentConfig) -> None:
    """What the config alone shows evaluation cannot run with (``jobs.evaluate --check``)."""
    check_sync_shift(experiment.eval.metrics, experiment.sampling)


def prepare(
    experiment: ExperimentConfig,
    checkpoint_ref: str | ResolvedCheckpoint | None = None,
    storage: Storage | None = None,
    log: Callable[[str], None] = print,
) -> PreparedEvaluation:
    """Every check of an evaluation, no Ray, no weights (see :func:`asva_platform.evaluation.runner.prepare_evaluation`)."""
    return prepare_evaluation(settings_of(experiment), checkpoint_ref, storage, log)


def evaluate_checkpoint(
    experiment: ExperimentConfig,
    checkpoint_ref: str | ResolvedCheckpoint | None = None,
    *,
    parallel: bool | None = None,
    storage: Storage | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Evaluate ``checkpoint_ref`` with the experiment's ``eval`` and ``generate`` sections (see
    :func:`asva_platform.evaluation.runner.evaluate_checkpoint`); nothing is logged to MLflow."""
    return evaluate_with(settings_of(experiment), checkpoint_ref, parallel=parallel, storage=storage, log=log)


def describe_evaluation(experiment: ExperimentConfig, checkpoint_ref: str, name: str) -> str:
    """An evaluation run's description in the MLflow UI: what was evaluated, how, and where to read it."""
    e, g = experiment.eval, experiment.generate
    videos = f"{e.max_videos} test videos" if e.max_videos else "every test video"
    return (
        f"Evaluation of `{checkpoint_ref}` under the **{experiment.protocol}** protocol: "
        f"{', '.join(e.metrics.metrics)} on {videos}, audio guidance {g.audio_guidance_scale:g}, "
        f"{g.num_inference_steps} sampling steps.\n"
        f"- metrics: `eval/*`; per-class table: artifact `{artifact_dir(name)}/{PER_CLASS_TABLE}`"
    )


def log_sync_plot(
    client, run_id: str, record: EvaluationRecord, storage: Storage, clips: int = SYNC_PLOT_CLIPS
) -> str:
    """Log ``eval/<name>/sync_curves.png``: ``clips`` of the evaluation's clips, spread evenly, each the audio's
    onset envelope with the ground truth's and the generated motion energy; returns its artifact path ('' when
    the evaluation has no clips)."""
    chosen = sync_curves.evenly_spread(record.clips, clips)
    if not chosen:
        return ""
    sampling = sync_curves.sampling_of(record)

    def read(uri: str) -> bytes | None:
        return storage.read_bytes(uri) if uri and storage.exists(uri) else None

    panels = [
        (c.name, sync_curves.clip_curves([read(c.gt_uri), read(c.video_uri)], sampling)) for c in chosen
    ]
    folder = artifact_dir(record.name)
    with tempfile.TemporaryDirectory(prefix="asva-sync-plot-") as tmp:
        path = sync_curves.draw_png(panels, ["ground truth", "generated"], Path(tmp) / SYNC_PLOT)
        client.log_artifact(run_id, str(path), folder)
    return f"{folder}/{SYNC_PLOT}"


def log_result(client, run_id: str, result: EvalResult, storage: Storage) -> None:
    """Everything an evaluation logs to its run: the record, the run-level metrics and the sync-curves plot (the
    job, and every sweep trial that evaluates)."""
    log_evaluation(client, run_id, result.record, result.run_metrics)
    log_sync_plot(client, run_id, result.record, storage)


def run(experiment: ExperimentConfig, log: Callable[[str], None] = print) -> Result:
    """The whole job for a loaded experiment config (``eval.checkpoint`` names what to evaluate)."""
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    storage = Storage.from_config(experiment.storage)
    tracking_uri = resolve_tracking_uri(experiment.tracking)
    settings = settings_of(experiment, tracking_uri)
    checkpoint = resolve_checkpoint(experiment.eval.checkpoint, storage, tracking_uri)
    prep = prepare_evaluation(settings, checkpoint, storage, log)

    if checkpoint.run_id and experiment.eval.log_to == "checkpoint_run":
        client, run_id, own_run = MlflowClient(tracking_uri=tracking_uri), checkpoint.run_id, False
    else:
        tags = {TAG_EVAL_CHECKPOINT: checkpoint.ref, TAG_EVALUATED_RUN: checkpoint.run_id}
        client, run_id = start_run(
            tracking_uri,
            experiment.tracking.experiment,
            f"eval-{prep.name}",
            LoggedConfig.of(experiment),
            tags=tags,
            job=JOB,
            description=describe_evaluation(experiment, checkpoint.ref, prep.name),
        )
        own_run = True
    log(f"evaluate: logging to MLflow run {run_id} at {tracking_uri}")
    with run_status(client, run_id, close=own_run):
        result = run_evaluation(prep, log=log, started=started)
        result.mlflow_run_id = run_id
        log_result(client, run_id, result, storage)
        result.mlflow_url = ui_url(
            tracking_uri,
            client.get_run(run_id).info.experiment_id,
            run_id,
            f"{artifact_dir(result.record.name)}/{PER_CLASS_TABLE}",
        )
    return result
