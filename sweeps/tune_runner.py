"""Run a sweep file with Ray Tune: checks first, then the parent run, then Tune (new or resumed), then the summary.

Order of work, so bad input costs nothing:

1. before Ray: the tracking server answers; the sweep's storage is reachable; a train sweep's base config
   passes the training preflight (cache present, enough windows); a guidance sweep's evaluation is
   planned (checkpoint resolved, metric weights present, videos probed) -- :func:`prepare_sweep`;
2. the parent run: created on first start, found again (and the sweep's settings compared) on a re-run,
   through ``<sweep>/asva-sweep.json``;
3. Ray, then Tune: a sweep whose Tune state exists on storage is restored (finished trials kept, unfinished
   and failed ones run again, their MLflow runs reused by trial id), else a new one starts;
4. the summary on the parent run (table, plots, best trial; for a guidance sweep on Sync the paired
   comparison with the baseline value, also printed and in the result); child runs no trial owns (from an
   attempt that died before Tune first saved its state) are deleted, so the parent has exactly one child per
   trial.

Storage layout under ``<spec.storage_path or storage.root/sweeps>/<name>/``: Tune's experiment state and
trial folders (``trial_<id>/``), ``asva-sweep.json``, and for train sweeps ``runs/<Tune run id>/<run name>/``
(each trial's training checkpoints).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from asva_platform import config as cfg
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.cluster import check_fits, init_ray
from asva_platform.errors import UserError
from asva_platform.evaluation import job as evaluation
from asva_platform.experiment import ExperimentConfig
from asva_platform.storage import Storage, is_s3, join
from asva_platform.tracking import (
    TAG_CACHE_ID,
    TAG_CHECKPOINT,
    TAG_STOPPED_EARLY,
    TAG_SWEEP_ROLE,
    TAG_TRIAL_ID,
    resolve_tracking_uri,
    run_status,
    ui_url,
)
from asva_platform.training import job as training
from sweeps.comparison import SweepComparison, compare_trials
from sweeps.mlflow_sweep import (
    SweepRunsCallback,
    create_parent_run,
    list_child_runs,
    stopped_early,
    sweep_tags,
    trial_run_name,
)
from sweeps.placement import start_ledger
from sweeps.report import TrialRow, log_summary, summary_links
from sweeps.spec import LoadedSweep, representative_values, tune_search_space
from sweeps.trainables import (
    EVAL_URI_KEY,
    SweepContext,
    fixed_trial_values,
    guidance_trial,
    plain_params,
    train_trial,
)

STATE_FILE = "asva-sweep.json"
CHECKPOINT_KEY = "checkpoint_path"
"""What TuneReportCallback adds to a report that came with a checkpoint (its storage path, no scheme)."""
SWEEPS_DIR = "sweeps"
RUNS_DIR = "runs"
# Tune saves its experiment state (what a restore reads) at most this often; the default (>= 10 s) would
# let a driver killed shortly after a trial finished forget it. Small JSON files: cheap.
STATE_SAVE_PERIOD_S = "5"


@dataclass
class SweepResult:
    experiment: str
    experiment_id: str
    parent_run_id: str
    sweep_uri: str
    metric: str
    trials: list[TrialRow]
    best: TrialRow | None
    resumed: bool
    deleted_runs: list[str] = field(default_factory=list)
    """Child runs no trial owned (removed from the sweep, soft-deleted in MLflow)."""
    comparison: SweepComparison | None = None
    """Guidance sweeps on Sync: every trial paired against the baseline value (sweeps.comparison)."""
    mlflow_url: str = ""
    """The sweep's runs table in the MLflow UI, the parent with its trials (empty with a local tracking file)."""
    links: dict[str, str] = field(default_factory=dict)
    """Where to look in the MLflow UI (:func:`sweeps.report.summary_links`): runs table, parent run, plot,
    settings table ({} with a local tracking file)."""

    def to_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {
                "params": self.best.params,
                "metric": self.best.metrics.get(self.metric),
                "metric_name": self.metric,
                "run_id": self.best.run_id,
                "run_name": self.best.run_name,
                "trial_id": self.best.trial_id,
            }
        return {
            "experiment": self.experiment,
            "parent_run_id": self.parent_run_id,
            "trials": len(self.trials),
            "best": best,
            "stopped_early": sum(r.status == "stopped_early" for r in self.trials),
            "failed": sum(r.status == "failed" for r in self.trials),
            "resumed": self.resumed,
            "sweep_uri": self.sweep_uri,
            "comparison": self.comparison.to_json() if self.comparison else None,
            "mlflow_url": self.mlflow_url,
            "experiment_id": self.experiment_id,
            "links": self.links,
        }


@dataclass
class PreparedSweep:
    loaded: LoadedSweep
    tracking_uri: str
    storage: Storage
    sweeps_root: str
    sweep_uri: str
    cache_id: str = ""
    checkpoint: ResolvedCheckpoint | None = None
    """Guidance sweeps: the checkpoint every trial evaluates."""


def _checkpoint_cache_id(resolved: ResolvedCheckpoint, tracking_uri: str) -> str:
    if not resolved.run_id:
        return ""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_run(resolved.run_id).data.tags.get(TAG_CACHE_ID, "")


def prepare_sweep(loaded: LoadedSweep, log: Callable[[str], None] = print) -> PreparedSweep:
    """Every check that needs no cluster (see the module doc); one-line errors."""

    spec, base = loaded.spec, loaded.base
    if spec.search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise UserError("search: optuna is not installed (pip install optuna), or use random") from None
    tracking_uri = resolve_tracking_uri(base.tracking)
    storage = Storage.from_config(base.storage)
    sweeps_root = spec.storage_path or join(base.storage.root, SWEEPS_DIR)
    storage.check_reachable(sweeps_root)
    prep = PreparedSweep(loaded, tracking_uri, storage, sweeps_root, join(sweeps_root, spec.name))
    if spec.kind == "train":
        prep.cache_id = training.preflight(base, storage_path=join(prep.sweep_uri, RUNS_DIR)).cache_id
    else:
        first = {k: representative_values(d)[0] for k, d in spec.search_space.items()}
        trial_cfg = loaded.trial_config({**first, **fixed_trial_values(spec, tracking_uri)})
        prep.checkpoint = evaluation.prepare(trial_cfg, spec.checkpoint, storage, log=log).checkpoint
        prep.cache_id = _checkpoint_cache_id(prep.checkpoint, tracking_uri)
    return prep


def sweep_settings(loaded: LoadedSweep) -> dict[str, str]:
    """What a resumed sweep must share with its first start: the spec (bar where it is stored) and base."""
    spec = cfg.to_dict(loaded.spec)
    spec.pop("storage_path", None)
    flat = {f"sweep.{k}": v for k, v in cfg.flatten(spec).items()}
    flat.update({f"base.{k}": v for k, v in cfg.flatten(loaded.base).items()})
    return {k: json.dumps(v, sort_keys=True) for k, v in flat.items()}


def open_parent(prep: PreparedSweep, log: Callable[[str], None]) -> tuple[str, str, bool]:
    """``(experiment_id, parent_run_id, resumed)``: the sweep's parent run, created or found again."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    spec = prep.loaded.spec
    state_uri = join(prep.sweep_uri, STATE_FILE)
    settings = sweep_settings(prep.loaded)
    tags = sweep_tags(spec.name, spec.kind, prep.cache_id)
    if prep.storage.exists(state_uri):
        state = prep.storage.read_json(state_uri)
        old = state.get("settings", {})
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            shown = ", ".join(changed[:4]) + (f" (+{len(changed) - 4} more)" if len(changed) > 4 else "")
            raise UserError(
                f"sweep {spec.name!r} at {prep.sweep_uri} was started with other settings ({shown}); "
                "re-run it unchanged to resume it, or give the new sweep another name"
            )
        client = MlflowClient(tracking_uri=prep.tracking_uri)
        try:
            run = client.get_run(state["parent_run_id"])
            if run.info.lifecycle_stage == "active":
                client.update_run(run.info.run_id, status="RUNNING")
                log(f"sweep {spec.name}: resuming under parent run {run.info.run_id}")
                return run.info.experiment_id, run.info.run_id, True
        except MlflowException:
            pass
        log(f"sweep {spec.name}: the parent run recorded in {state_uri} is gone; creating a new one")
    exp_id, run_id = create_parent_run(prep.tracking_uri, prep.loaded, prep.sweep_uri, tags)
    prep.storage.write_json(
        state_uri,
        {
            "parent_run_id": run_id,
            "experiment_id": exp_id,
            "settings": settings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    log(f"sweep {spec.name}: parent run {run_id} in experiment {spec.name!r}")
    return exp_id, run_id, False


def check_cluster_fits(spec, base: ExperimentConfig, resources: dict[str, float], remote: bool) -> None:
    """A trial that can never be scheduled would hang the sweep: say so before Tune starts."""
    need = dict(spec.resources_per_trial)
    if spec.kind == "train":
        t = base.train
        need["CPU"] = need.get("CPU", 0) + t.num_workers * t.cpus_per_worker
        if t.use_gpu:
            need["GPU"] = need.get("GPU", 0) + t.num_workers
    check_fits(
        f"one {spec.kind} trial",
        need,
        resources,
        "lower resources_per_trial or the trial's workers",
        may_grow=remote,
    )


def trial_budget(spec, base) -> tuple[str, int]:
    """``(time_attr, full length)`` of a trial that runs to the end (a train trial: train.max_steps); a
    trial that stops short of it was stopped early by the scheduler."""
    if spec.kind == "train":
        return spec.scheduler.time_attr, base.train.max_steps
    return "", 0


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def trial_name(trial) -> str:
    return trial_run_name(plain_params(trial.config), trial.trial_id)


def build_tuner(ctx: SweepContext, prep: PreparedSweep, log: Callable[[str], None]):
    """A new Tuner, or the sweep's Tune run restored from storage; ``(tuner, restored)``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from sweeps.schedulers import EvaluatingASHA  # imports Ray Tune

    spec, base = prep.loaded.spec, prep.loaded.base
    fn = train_trial if spec.kind == "train" else guidance_trial
    trainable = tune.with_resources(tune.with_parameters(fn, ctx=ctx), dict(spec.resources_per_trial))
    fs, root = prep.storage.filesystem(prep.sweeps_root)
    experiment_path = str(PurePosixPath(root) / spec.name)
    if tune.Tuner.can_restore(experiment_path, storage_filesystem=fs):
        log(f"sweep {spec.name}: restoring Tune state from {prep.sweep_uri}")
        return tune.Tuner.restore(
            experiment_path, trainable, resume_unfinished=True, restart_errored=True, storage_filesystem=fs
        ), True
    scheduler = None
    if spec.scheduler.type == "asha":
        s = spec.scheduler
        # a trial that trained to max_t still has its evaluation to run and report (sweeps/schedulers.py)
        scheduler = (EvaluatingASHA if spec.evaluate else ASHAScheduler)(
            time_attr=s.time_attr,
            max_t=s.max_t or base.train.max_steps,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    search_alg = None
    points = [dict(p) for p in spec.points_to_evaluate]
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(points_to_evaluate=points or None)
    elif points:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(points_to_evaluate=points)
    callback = SweepRunsCallback(
        ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, ctx.sweep_uri, *trial_budget(spec, base)
    )
    tuner = tune.Tuner(
        trainable,
        param_space=tune_search_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            scheduler=scheduler,
            search_alg=search_alg,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=root, storage_filesystem=fs, callbacks=[callback], verbose=1
        ),
    )
    return tuner, False


def _trial_id_of(result) -> str:
    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return str(tid)
    name = PurePosixPath(str(result.path)).name
    return name[len("trial_") :] if name.startswith("trial_") else name


def collect_rows(results, spec, base, children: dict[str, str], checkpoint_scheme: str) -> list[TrialRow]:
    """One :class:`TrialRow` per Tune trial."""
    rows = []
    time_attr, full_t = trial_budget(spec, base)
    for result in results:
        metrics = {
            k: float(v)
            for k, v in (result.metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        trial_id = _trial_id_of(result)
        params = plain_params({k: v for k, v in (result.config or {}).items() if k in spec.search_space})
        if result.error is not None:
            status = "failed"
        elif stopped_early(metrics, time_attr, full_t):
            status = "stopped_early"
        else:
            status = "finished"
        history, checkpoint = [], ""
        df = result.metrics_dataframe
        if spec.kind == "train" and df is not None and time_attr in df and spec.metric in df:
            history = [(float(x), float(y)) for x, y in zip(df[time_attr], df[spec.metric])]
        if df is not None and CHECKPOINT_KEY in df:
            paths = [p for p in df[CHECKPOINT_KEY] if isinstance(p, str) and p]
            checkpoint = checkpoint_scheme + paths[-1] if paths else ""
        rows.append(
            TrialRow(
                trial_id,
                trial_run_name(params, trial_id),
                params,
                status,
                metrics,
                children.get(trial_id, ""),
                history,
                str(result.error).splitlines()[0][:300] if result.error is not None else "",
                checkpoint,
                str((result.metrics or {}).get(EVAL_URI_KEY) or ""),
            )
        )
    return rows


def finalize_children(client, rows: list[TrialRow]) -> None:
    """Every child's final status, early-stop tag and last checkpoint, now that no trial runs: a trial Tune
    stops is killed mid-run, so its run's own bookkeeping may be missing or (a late error) wrong."""

    for row in rows:
        if not row.run_id:
            continue
        run = client.get_run(row.run_id)
        client.set_tag(row.run_id, TAG_STOPPED_EARLY, str(row.status == "stopped_early").lower())
        if row.checkpoint and not run.data.tags.get(TAG_CHECKPOINT):
            client.set_tag(row.run_id, TAG_CHECKPOINT, row.checkpoint)
        wanted = "FAILED" if row.status == "failed" else "FINISHED"
        if run.info.status != wanted:
            client.set_terminated(row.run_id, status=wanted)


def reconcile_children(
    client, experiment_id: str, parent_run_id: str, trial_ids: set[str], log: Callable[[str], None]
) -> tuple[dict[str, str], list[str]]:
    """``({trial_id: run_id}, deleted)``: the children of live trials; strays (no trial owns them) are
    soft-deleted (restorable from MLflow's trash)."""
    owned, deleted = {}, []
    for run in list_child_runs(client, experiment_id, parent_run_id):
        tid = run.data.tags.get(TAG_TRIAL_ID, "")
        if run.data.tags.get(TAG_SWEEP_ROLE) != "trial":
            continue
        if tid in trial_ids and tid not in owned:
            owned[tid] = run.info.run_id
        else:
            client.delete_run(run.info.run_id)
            deleted.append(run.info.run_id)
            log(
                f"sweep: deleted child run {run.info.run_id} ({run.info.run_name}): no trial of this sweep owns it"
            )
    return owned, deleted


def run_sweep(loaded: LoadedSweep, log: Callable[[str], None] = print) -> SweepResult:
    """Run (or resume) the sweep end to end; see the module doc."""
    from mlflow.tracking import MlflowClient

    spec, base = loaded.spec, loaded.base
    prep = prepare_sweep(loaded, log)
    experiment_id, parent_id, parent_resumed = open_parent(prep, log)
    client = MlflowClient(tracking_uri=prep.tracking_uri)
    ctx = SweepContext(
        loaded,
        prep.tracking_uri,
        experiment_id,
        parent_id,
        prep.sweep_uri,
        join(prep.sweep_uri, RUNS_DIR),
        sweep_tags(spec.name, spec.kind, prep.cache_id),
        prep.checkpoint,
    )
    with run_status(client, parent_id):
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_PERIOD_S)
        ray = init_ray(base.cluster)
        remote = bool(base.cluster.address or os.environ.get("RAY_ADDRESS"))
        check_cluster_fits(spec, base, ray.cluster_resources(), remote)
        ledger = None  # held until the sweep ends (see sweeps.placement)
        if spec.kind == "train":
            ledger = start_ledger(prep.sweep_uri)
        tuner, restored = build_tuner(ctx, prep, log)
        results = tuner.fit()
        trial_ids = {_trial_id_of(r) for r in results}
        children, deleted = reconcile_children(client, experiment_id, parent_id, trial_ids, log)
        rows = collect_rows(results, spec, base, children, "s3://" if is_s3(prep.sweep_uri) else "")
        finalize_children(client, rows)
        comparison = compare_trials(rows, spec, prep.storage)
        best = log_summary(client, parent_id, spec, rows, comparison)
        del ledger
    out = SweepResult(
        spec.name,
        experiment_id,
        parent_id,
        prep.sweep_uri,
        spec.metric,
        rows,
        best,
        restored or parent_resumed,
        deleted,
        comparison,
        ui_url(prep.tracking_uri, experiment_id),
        summary_links(prep.tracking_uri, experiment_id, parent_id, spec, comparison),
    )
    for row in sorted(rows, key=lambda r: r.run_name):
        value = row.metrics.get(spec.metric)
        shown = "-" if value is None else f"{value:.5g}"
        log(
            f"  {row.run_name:40s} {row.status:14s} {spec.metric}={shown}"
            + (f"  ({row.error})" if row.error else "")
        )
    for line in comparison.table() if comparison else []:
        log(line)
    if best is not None:
        log(
            f"sweep {spec.name}: best {spec.metric}={best.metrics[spec.metric]:.5g} from {best.run_name} "
            f"(run {best.run_id}); {len(rows)} trial(s)"
        )
    if out.mlflow_url:
        log(f"sweep {spec.name}: the parent run and its trials in MLflow: {out.mlflow_url}")
    if out.links.get("plot"):
        log(f"sweep {spec.name}: the {spec.metric} plot: {out.links['plot']}")
    return out
