"""MLflow tracking: the ``tracking`` config section, the platform's tag vocabulary, server preflight, and the
run lifecycle every stage uses.

Every job logs to the tracking server named by ``tracking.uri`` ($MLFLOW_TRACKING_URI wins). Runs get:
``mlflow.source.git.commit``, ``asva.ray_submission_id`` (when running as a Ray job), ``asva.job``, and
whatever the stage adds (``asva.cache_id``, ``asva.deepspeed_stage`` ...). The resolved config is logged
both as flattened dotted params and as ``config.yaml``. Every tag name the platform writes or reads is
defined below, once; a run is opened with :func:`start_run` (or resumed) and closed by :func:`run_status`,
which marks it FINISHED, KILLED (interrupted) or FAILED (any other error).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from asva_model.errors import AsvaError
from asva_platform import config as cfg

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_MLFLOW_PORT = 5100
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value

# ---------------------------------------------------------------------------------------------
# Tag vocabulary: every tag the platform writes or reads.

# MLflow's own
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"
"""Nests a run under another in the UI (sweep trials, compare pages)."""
TAG_NOTE = "mlflow.note.content"
"""MLflow's description of an experiment (an experiment tag) or a run (a run tag), shown as markdown."""
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3 opens an experiment of this kind on its runs table (the model-training view), not the GenAI
overview of traces, which none of our experiments hold."""
# Every run
TAG_JOB = "asva.job"
"""The job that made the run: preprocess, train, evaluate, sweep-*, compare."""
TAG_SUBMISSION_ID = "asva.ray_submission_id"
"""The Ray job submission id, when the run was made by a submitted job."""
# Preprocessing
TAG_CACHE_URI = "asva.cache_uri"
TAG_CACHE_ID = "asva.cache_id"
"""The latent cache a run was built from or trained on (preprocess, train, sweep parents)."""
TAG_NOOP = "asva.preprocess.noop"
"""`true` when the cache already existed and nothing was written."""
# Training
TAG_TRAIN_RUN = "asva.train_run"
"""A training run's checkpoint location: how a restarted job finds its MLflow run again."""
TAG_ZERO_STAGE = "asva.deepspeed_stage"
TAG_WORLD_SIZE = "asva.world_size"
TAG_RANK_NODES = "asva.rank_nodes"
"""``rank:node`` for every training rank (node ids shortened to 8 characters; the checkpoint's
trainer_state.json has the full placement)."""
TAG_DATA_MODE = "asva.data_mode"
TAG_CHECKPOINT = "asva.checkpoint_uri"
"""The run's latest checkpoint."""
TAG_EXPORT = "asva.export_uri"
"""The run's exported UNet folder (``save_pretrained``)."""
TAG_RESUMES = "asva.resumes"
RESUME_CHANGED_TAG = "asva.resume_{n}.changed"
"""On the n-th resume: the config keys whose values changed (MLflow params cannot be rewritten)."""
LOGGED_STEP_TAG = "asva.logged_step.{group}"
"""Per metric group, the last step logged (written with the metrics, so no step is logged twice)."""
TAG_PROTOCOL = "asva.protocol"
"""The run config's protocol (`authors`, `exact` or `mixed`: docs/metrics.md, "Reproducing the paper"); the
compare page warns when the runs it shows differ in it."""
# Evaluation
TAG_EVAL_LATEST = "asva.eval.latest"
"""The newest evaluation's name on a run."""
TAG_EVAL_URI = "asva.eval.uri"
TAG_EVALUATED_RUN = "asva.evaluated_run"
"""On a separate evaluation run: the training run whose checkpoint it evaluated."""
TAG_EVAL_CHECKPOINT = "asva.eval.checkpoint"
"""On a separate evaluation run: the checkpoint reference it evaluated."""
# Sweeps
TAG_SWEEP = "asva.sweep"
"""The sweep's name, on the parent and every child."""
TAG_SWEEP_ROLE = "asva.sweep.role"
"""`parent` or `trial`."""
TAG_TRIAL_ID = "asva.sweep.trial_id"
"""Tune's trial id: how a restarted trial (or the driver) finds the trial's run."""
TAG_SWEEP_URI = "asva.sweep.uri"
"""Where Tune keeps the sweep's state."""
TAG_STOPPED_EARLY = "asva.sweep.stopped_early"
"""`true` on a child whose trial the scheduler stopped before max_t."""
TAG_BEST_RUN = "asva.sweep.best_run_id"
TAG_BEST_TRIAL = "asva.sweep.best_run_name"
TAG_SWEEP_KIND = "asva.sweep.kind"
# Comparison pages
TAG_COMPARED = "asva.compare.runs"


@dataclass
class TrackingConfig:
    uri: str = f"http://127.0.0.1:{DEFAULT_MLFLOW_PORT}"
    """MLflow tracking server URI (a server, not a file store, so every node reaches it); $MLFLOW_TRACKING_URI wins."""
    experiment: str = "avsyncd"
    """MLflow experiment for this job's runs."""
    required: bool = True
    """Fail before starting when the tracking server is unreachable (False: log to a local store instead)."""

    def resolved_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.uri


class TrackingError(AsvaError):
    """The tracking server cannot be used; one line naming the URI."""


def check_tracking_server(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (before any cluster resources are taken) if an http(s) tracking server is unreachable."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        reason = "connection refused" if isinstance(err, requests.ConnectionError) else type(err).__name__
        raise TrackingError(f"cannot reach MLflow tracking server at {uri}: {reason}") from None
    if resp.status_code != 200:
        raise TrackingError(f"MLflow tracking server at {uri} is unhealthy (HTTP {resp.status_code})")


def resolve_tracking_uri(tracking_cfg: TrackingConfig, state_dir: str | Path = ".asva") -> str:
    """The URI to log to. A required server must answer; an optional one falls back to a local sqlite store
    (documented: runs logged there can be copied to the server later with ``mlflow`` export tools)."""
    uri = tracking_cfg.resolved_uri()
    try:
        check_tracking_server(uri)
        return uri
    except TrackingError:
        if tracking_cfg.required:
            raise
    local = Path(state_dir, "mlflow-offline").resolve()
    local.mkdir(parents=True, exist_ok=True)
    print(f"warning: MLflow server {uri} unreachable and tracking.required=false: logging to {local}")
    return f"sqlite:///{local}/mlflow.db"


def ray_submission_id() -> str:
    """The Ray job submission id when this process is a Ray job's entrypoint, else ''."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if raw:
        try:
            return json.loads(raw).get("metadata", {}).get("job_submission_id", "") or ""
        except json.JSONDecodeError:
            pass
    return os.environ.get("ASVA_SUBMISSION_ID", "")


def git_commit() -> str:
    """The code version: $ASVA_GIT_COMMIT (set by `asva submit`, since Ray's working_dir upload has no .git),
    else `git rev-parse HEAD` of the package's checkout, else ''."""
    if os.environ.get("ASVA_GIT_COMMIT"):
        return os.environ["ASVA_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def standard_tags(job: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    tags = {TAG_JOB: job}
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    sub = ray_submission_id()
    if sub:
        tags[TAG_SUBMISSION_ID] = sub
    for k, v in (extra or {}).items():
        if v is not None and v != "":
            tags[k] = str(v)
    return tags


@dataclass(frozen=True)
class LoggedConfig:
    """What a run records of the config that made it: every dotted key as a param, the YAML as an artifact and,
    for an experiment config, the protocol it follows (a tag)."""

    params: dict[str, str]
    yaml: str
    protocol: str = ""

    @classmethod
    def of(cls, config_obj: DataclassInstance) -> LoggedConfig:
        """Of a config dataclass: flattened dotted params, values stringified and clipped to MLflow's limit."""
        params = {
            k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:MAX_PARAM_VALUE]
            for k, v in cfg.flatten(config_obj).items()
        }
        protocol = getattr(config_obj, "protocol", "")  # an experiment config names the protocol it follows
        return cls(params, cfg.dump_yaml(config_obj), protocol if isinstance(protocol, str) else "")


EXPERIMENT_NOTES = {
    "train": "AVSyncD training runs: one run per training name (a re-run with the same name resumes into the "
    "same run). Compare `loss` and `val_loss` across runs in the chart view; each run's description "
    "says its recipe, data and where its checkpoints, samples and export are. Evaluations of a run "
    "log `eval/*` metrics into it.",
    "preprocess": "Latent-cache builds: one run per cache id, with its clip counts, skipped media and the "
    "cache's URI (tag `asva.cache_uri`). Training runs name the cache they read in `asva.cache_id`.",
    "evaluate": "Evaluations: FID, FVD, IA/IT, the audio-sync metrics, each with the protocol it followed "
    "(tag `asva.protocol`) and the checkpoint it evaluated (tag `asva.eval.checkpoint`).",
    "sweep": "A Ray Tune sweep: the parent run (tag `asva.sweep.role=parent`) holds the search space, the "
    "summary table `summary/trials.csv`, the plots and the best trial; each child run is one trial. "
    "Expand the parent in the runs table to see its trials.",
    "compare": "Side-by-side comparison pages (`compare/index.html`) of the runs named in `asva.compare.runs`.",
}
"""The description an experiment gets when a job of that kind creates it (or finds it without one)."""


UI_MODE = "workflowType=machine_learning"
"""MLflow 3's UI opens in its GenAI mode (traces, judges, the assistant's nav) unless told otherwise; this
query switches it to the model-training mode (runs, models), where what we log lives."""


def ui_url(tracking_uri: str, experiment_id: str, run_id: str = "", artifact: str = "") -> str:
    """Where the MLflow UI shows an experiment's runs table, a run, or one artifact of a run, in its
    model-training mode ("" when the tracking store is not a server, e.g. a local sqlite file)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    url = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if run_id:
        url += f"/{run_id}" + (f"/artifactPath/{artifact}" if artifact else "")
    return f"{url}?{UI_MODE}"


def get_or_create_experiment(client, name: str, job: str = "") -> str:
    """The experiment's id, created if needed; either way it is of the model-training kind and, when it has
    none yet, gets the description of ``job``'s experiments."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            client.create_experiment(name, artifact_location=_local_artifact_root(client, name))
        except Exception:  # a concurrent creator won the race
            if client.get_experiment_by_name(name) is None:
                raise
        exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    exp_id = exp.experiment_id
    if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    note = EXPERIMENT_NOTES.get(job.split("-")[0], "")
    if note and not exp.tags.get(TAG_NOTE):
        client.set_experiment_tag(exp_id, TAG_NOTE, note)
    return exp_id


def _local_artifact_root(client, experiment: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database, not into ./mlruns of whatever the cwd is."""
    uri = client._tracking_client.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server assigns its own artifact root
    db_dir = Path(uri[len("sqlite:///") :]).parent
    return (db_dir / "artifacts" / experiment).resolve().as_uri()


def log_params_batched(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    config: LoggedConfig | None = None,
    tags: dict[str, str] | None = None,
    job: str = "",
    parent_run_id: str = "",
    description: str = "",
):
    """Create a run (no global mlflow state) and return ``(client, run_id)``; close it with :func:`run_status`.
    ``description`` is the run's markdown description in the UI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = get_or_create_experiment(client, experiment, job)
    all_tags = standard_tags(job, tags)
    if description:
        all_tags[TAG_NOTE] = description
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    if config is not None and config.protocol:
        all_tags[TAG_PROTOCOL] = config.protocol
    run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    if config is not None:
        log_params_batched(client, run.info.run_id, config.params)
        client.log_text(run.info.run_id, config.yaml, "config.yaml")
    return client, run.info.run_id


@contextlib.contextmanager
def run_status(client, run_id: str, close: bool = True) -> Iterator[str]:
    """The lifecycle of an open run: the body's outcome becomes its status: FINISHED, KILLED (interrupted) or
    FAILED (any other error, which is re-raised). ``close=False`` leaves the status alone (a run someone else
    owns, e.g. a training run an evaluation logs into)."""
    try:
        yield run_id
    except (KeyboardInterrupt, SystemExit):
        if close:
            client.set_terminated(run_id, status="KILLED")
        raise
    except BaseException:
        if close:
            client.set_terminated(run_id, status="FAILED")
        raise
    if close:
        client.set_terminated(run_id, status="FINISHED")
