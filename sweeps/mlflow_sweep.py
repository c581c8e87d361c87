"""A sweep in MLflow: one experiment, one parent run, one child run per Tune trial.

Ray's own integrations do not give this shape (``MLflowLoggerCallback`` makes flat runs all named after the
trial, ``setup_mlflow`` defaults the experiment to the trial name, neither nests), so it is built by hand:

* the **parent run** is created by the sweep driver, found again on a re-run through ``asva-sweep.json``
  in the sweep's storage folder (which also pins the sweep's settings, so a resumed sweep cannot silently
  change them);
* each **child run** carries ``mlflow.parentRunId`` (what the UI nests by) and ``asva.sweep.trial_id``
  (Tune's trial id, which survives a driver restart), so a restarted trial finds its run instead of making
  a second one. Train trials' runs are the training job's own run (``asva_platform.training.job.run(..., parent_run_id,
  run_tags)``); guidance trials open theirs with :func:`open_child_run`;
* :class:`SweepRunsCallback` runs on the Tune driver and closes each child when Tune is done with its trial:
  trials ASHA stops never return from their function, so their runs would otherwise stay RUNNING.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from asva_platform import config as cfg
from asva_platform import tracking
from asva_platform.tracking import (
    TAG_CACHE_ID,
    TAG_STOPPED_EARLY,
    TAG_SWEEP,
    TAG_SWEEP_KIND,
    TAG_SWEEP_ROLE,
    TAG_SWEEP_URI,
    TAG_TRIAL_ID,
)
from sweeps.placement import release_trial
from sweeps.report import describe_sweep

log = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_index(trial_id: str) -> int:
    """The trial's number within its sweep (Tune ids are ``<run uuid>_<counter>``)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def setting_name(params: dict[str, Any]) -> str:
    """A readable name of a setting, e.g. ``lr=0.0003,audio_cond_drop_prob=0.1``: keys shortened to their last
    dotted part unless two would collide. Safe as a storage folder name (no spaces, '/', '#')."""
    leaves = [k.rsplit(".", 1)[-1] for k in params]
    short = len(set(leaves)) == len(leaves)
    parts = [f"{k.rsplit('.', 1)[-1] if short else k}={_fmt(v)}" for k, v in sorted(params.items())]
    return ",".join(parts).replace("/", "_").replace(" ", "")


def trial_run_name(params: dict[str, Any], trial_id: str) -> str:
    """The trial's run name: its :func:`setting_name` and its trial number, which keeps names distinct when a
    sampler draws the same values twice, e.g. ``lr=0.0003,audio_cond_drop_prob=0.1_t2``."""
    return f"{setting_name(params)}_t{trial_index(trial_id)}"


def sweep_tags(
    sweep_name: str, kind: str, cache_id: str = "", extra: dict[str, str] | None = None
) -> dict[str, str]:
    tags = {TAG_SWEEP: sweep_name, TAG_SWEEP_KIND: kind, **(extra or {})}
    if cache_id:
        tags[TAG_CACHE_ID] = cache_id
    return tags


def child_tags(base_tags: dict[str, str], trial_id: str) -> dict[str, str]:
    return {**base_tags, TAG_SWEEP_ROLE: "trial", TAG_TRIAL_ID: trial_id}


def find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The run of trial ``trial_id`` under ``parent_run_id`` (not deleted), if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_TRIAL_ID}` = '{trial_id}' and tags.`{tracking.TAG_PARENT}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def list_child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """Every (not deleted) child run of the parent."""
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{tracking.TAG_PARENT}` = '{parent_run_id}'", max_results=10000
    )


def open_child_run(
    uri: str,
    experiment: str,
    parent_run_id: str,
    trial_id: str,
    run_name: str,
    config: tracking.LoggedConfig,
    tags: dict[str, str],
    job: str,
) -> str:
    """Find the trial's run (a restarted trial) or create it with the config as params; set it RUNNING."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = tracking.get_or_create_experiment(client, experiment)
    run_id = find_child_run(client, exp_id, parent_run_id, trial_id)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    _, run_id = tracking.start_run(
        uri, experiment, run_name, config, child_tags(tags, trial_id), job=job, parent_run_id=parent_run_id
    )
    return run_id


class SweepRunsCallback(Callback):
    """Driver-side: when Tune completes, stops or fails a trial, close its child run (FINISHED/FAILED, tag
    ``asva.sweep.stopped_early``) and free its training workers' placement groups.

    Holds only strings (Tune pickles callbacks into its experiment state and restores them on resume).
    Never raises: an MLflow hiccup must not stop the sweep (it is logged; the sweep's end re-checks every
    child anyway, see ``tune_runner.finalize_children``).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        sweep_uri: str,
        time_attr: str = "",
        full_t: int = 0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep_uri = sweep_uri
        self.time_attr = time_attr
        self.full_t = full_t

    def stopped_early(self, last_result: dict | None) -> bool:
        """Did the trial end before its full budget (``full_t`` in ``time_attr``, e.g. train.max_steps)?"""
        return stopped_early(last_result, self.time_attr, self.full_t)

    def _close(self, trial, status: str) -> None:

        try:
            release_trial(self.sweep_uri, trial.trial_id)
        except Exception as err:  # noqa: BLE001 - logged, never fatal to the sweep
            log.warning("sweep: could not free the workers of trial %s: %s", trial.trial_id, err)
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            run_id = find_child_run(client, self.experiment_id, self.parent_run_id, trial.trial_id)
            if run_id is None:  # the trial died before it opened its run
                return
            early = status == "FINISHED" and self.stopped_early(trial.last_result)
            client.set_tag(run_id, TAG_STOPPED_EARLY, str(early).lower())
            client.set_terminated(run_id, status=status)
        except Exception as err:  # noqa: BLE001
            log.warning("sweep: could not close the MLflow run of trial %s: %s", trial.trial_id, err)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED")


def stopped_early(last_result: dict | None, time_attr: str, full_t: int) -> bool:
    if not (time_attr and full_t):
        return False
    reached = (last_result or {}).get(time_attr)
    return reached is not None and float(reached) < full_t


def create_parent_run(uri: str, loaded, sweep_uri: str, tags: dict[str, str]) -> tuple[str, str]:
    """The sweep's parent run: the sweep's settings and search space as params, the sweep file, its resolved
    form and the resolved base config as artifacts. Returns ``(experiment_id, run_id)``."""

    spec = loaded.spec
    client, run_id = tracking.start_run(
        uri,
        spec.name,
        spec.name,
        None,
        {**tags, TAG_SWEEP_ROLE: "parent", TAG_SWEEP_URI: sweep_uri},
        job="sweep",
        description=describe_sweep(spec),
    )
    tracking.log_params_batched(client, run_id, tracking.LoggedConfig.of(spec).params)
    client.log_artifact(run_id, str(loaded.path), "sweep")
    client.log_text(run_id, cfg.dump_yaml(spec), "sweep/sweep.resolved.yaml")
    client.log_text(run_id, cfg.dump_yaml(loaded.base), "sweep/base_config.yaml")
    return client.get_run(run_id).info.experiment_id, run_id
