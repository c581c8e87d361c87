"""The Tune function trainables: one training run, or one evaluation at one guidance scale, per trial.

Both live in the package (Ray workers import them by module path) and get everything they need from a
:class:`SweepContext` passed with ``tune.with_parameters``.

* ``train_trial`` runs the training stage's own ``run`` (``asva_platform.training.job``) (a ``TorchTrainer`` under Train V2) with
  ``TuneReportCallback``, so every Train report (``loss``, ``step`` ...) reaches Tune and ASHA can stop the
  trial between rungs. The training run is the trial's child run; its checkpoints go to
  ``<sweep>/runs/<Tune run id>/<run name>/`` on the sweep's storage, so a restarted trial resumes from them.
  Its workers' placement groups are recorded (:mod:`sweeps.placement`) so a stopped trial's are freed.
  With ``evaluate: true`` the trial then evaluates its final weights and reports the evaluation's metrics
  with its ``eval_uri`` (:func:`evaluate_trained`), as a guidance trial does.
* ``guidance_trial`` evaluates the sweep's checkpoint in this process (no nested Ray) at the trial's
  ``generate.*`` values, logs the evaluation to its child run and reports the metrics once, with the
  evaluation's output URI (``eval_uri``: its per-clip ``scores.npz``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asva_platform.evaluation import job as evaluation
from asva_platform.experiment import ExperimentConfig
from asva_platform.storage import Storage, join
from asva_platform.tracking import LoggedConfig, run_status
from asva_platform.training import job as training
from sweeps.mlflow_sweep import child_tags, open_child_run, trial_run_name
from sweeps.placement import RecordPlacementGroups
from sweeps.spec import LoadedSweep

EVAL_URI_KEY = "eval_uri"
"""Guidance trials report their evaluation's output URI under this key, next to the metrics."""


@dataclass
class SweepContext:
    """What every trial of a sweep shares (pickled once into the object store)."""

    loaded: LoadedSweep
    tracking_uri: str
    """The tracking URI the driver checked; trials log to the same server."""
    experiment_id: str
    parent_run_id: str
    sweep_uri: str
    """Where Tune keeps the sweep's state (storage URI)."""
    runs_root: str
    """Train sweeps: the folder of the trials' training runs (checkpoints)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags of every child run (sweep name, kind, cache_id)."""
    checkpoint: Any = None
    """Guidance sweeps: the resolved checkpoint (asva_platform.artifacts.checkpoint.ResolvedCheckpoint)."""

    def trial_config(self, params: dict[str, Any]) -> ExperimentConfig:
        """The trial's experiment config: the swept values, logged to the sweep's experiment."""
        return self.loaded.trial_config({**params, **fixed_trial_values(self.loaded.spec, self.tracking_uri)})


def fixed_trial_values(spec, tracking_uri: str) -> dict[str, Any]:
    """Config values every trial gets besides its swept ones: the sweep's experiment and server, and for
    guidance trials the checkpoint, evaluated in-process."""
    fixed: dict[str, Any] = {"tracking.experiment": spec.name, "tracking.uri": tracking_uri}
    if spec.kind == "guidance":
        fixed.update({"eval.checkpoint": spec.checkpoint, "eval.parallel": False})
    return fixed


def plain_params(config: dict[str, Any]) -> dict[str, Any]:
    """Tune's trial config as plain Python values (samplers may hand out numpy scalars)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}


def _trial_id() -> str:
    from ray import tune

    return tune.get_context().get_trial_id()


def train_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """One training run per trial; Train reports reach Tune through ``TuneReportCallback``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = _trial_id()
    params = plain_params(config)
    # <runs>/<Tune run>/<run name>: a restored trial (same id) finds its checkpoints and MLflow run again; a new
    # Tune run of the same sweep (its state deleted) never picks up an older run's.
    runs_root = join(ctx.runs_root, trial_id.rsplit("_", 1)[0])
    experiment = ctx.trial_config(params)
    result = training.run(
        experiment,
        callbacks=[TuneReportCallback(), RecordPlacementGroups(ctx.sweep_uri, trial_id)],
        run_name=trial_run_name(params, trial_id),
        storage_path=runs_root,
        parent_run_id=ctx.parent_run_id,
        run_tags=child_tags(ctx.tags, trial_id),
    )
    if ctx.loaded.spec.evaluate:
        evaluate_trained(experiment, result, ctx.tracking_uri)


def evaluate_trained(experiment: ExperimentConfig, result: training.Result, tracking_uri: str) -> None:
    """Evaluate a train trial's final weights (its run's export, else its last checkpoint) in this process, log
    the evaluation to its training run and report its metrics once more, with the last report's (a scheduler
    sees the same ``step``)."""
    from mlflow.tracking import MlflowClient

    evaluated = evaluation.evaluate_checkpoint(experiment, result.run_id, parallel=False)
    last = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    log_and_report(
        MlflowClient(tracking_uri=tracking_uri),
        result.run_id,
        experiment,
        evaluated,
        {**last, "step": float(result.final_step)},
    )


def log_and_report(
    client, run_id: str, experiment: ExperimentConfig, evaluated, earlier: dict[str, float] | None = None
) -> None:
    """Log a trial's evaluation to its run and report its metrics to Tune, after ``earlier`` ones, with the
    evaluation's URI (``eval_uri``: where the per-clip scores are, for the driver's paired comparison,
    sweeps.comparison)."""
    from ray import tune

    evaluation.log_result(client, run_id, evaluated, Storage.from_config(experiment.storage))
    metrics = {k: float(v) for k, v in evaluated.record.metrics.items()}
    tune.report({**(earlier or {}), **metrics, EVAL_URI_KEY: evaluated.record.eval_uri})


def guidance_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """Generate + evaluate the sweep's checkpoint at this trial's settings; report the metrics once."""
    from mlflow.tracking import MlflowClient

    trial_id = _trial_id()
    params = plain_params(config)
    experiment = ctx.trial_config(params)
    run_id = open_child_run(
        ctx.tracking_uri,
        ctx.loaded.spec.name,
        ctx.parent_run_id,
        trial_id,
        trial_run_name(params, trial_id),
        LoggedConfig.of(experiment),
        ctx.tags,
        job="sweep-guidance",
    )
    client = MlflowClient(tracking_uri=ctx.tracking_uri)
    with run_status(client, run_id):
        result = evaluation.evaluate_checkpoint(experiment, ctx.checkpoint, parallel=False)
        log_and_report(client, run_id, experiment, result)
