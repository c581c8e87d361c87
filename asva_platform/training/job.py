"""Driver side of training: preflight, the MLflow run, the TorchTrainer, export, the result.

``run(experiment)`` is the whole job (``jobs/train.py`` is a CLI around it). The sweep stage calls
it from a Tune function trainable with ``callbacks=[TuneReportCallback()]`` so every report (``loss`` and
``step`` included) reaches Tune's scheduler; ``build_trainer`` is the lower-level piece.

Order: config checks, tracking server, storage and the cache are checked BEFORE Ray resources are taken;
then the MLflow run is found (same name = same run) or created; then ``fit``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from asva_platform import config as cfgmod
from asva_platform.artifacts.cache import TRAINING_COLUMNS, CacheHandle, open_cache
from asva_platform.artifacts.checkpoint import STATE_FILE, TrainerState
from asva_platform.cluster import ClusterConfig, check_fits, init_ray, joined, local_resources
from asva_platform.datasets import dataset_access
from asva_platform.errors import UserError
from asva_platform.experiment import ExperimentConfig
from asva_platform.inference.checkpoints import export_checkpoint
from asva_platform.storage import Storage, StorageError, join
from asva_platform.tracking import (
    TAG_CACHE_ID,
    TAG_CHECKPOINT,
    TAG_DATA_MODE,
    TAG_EXPORT,
    TAG_WORLD_SIZE,
    TAG_ZERO_STAGE,
    LoggedConfig,
    resolve_tracking_uri,
    run_status,
    ui_url,
)
from asva_platform.training.config import TrainConfig
from asva_platform.training.loop import (  # the reported metric names are part of the stage's entry
    AUDIO_GAP_METRICS,
    REPORTED_METRICS,
    TRAINING_METRICS,
    VALIDATION,
    VALIDATION_METRIC,
    loop_config,
    train_loop_per_worker,
)
from asva_platform.training.run_tracking import open_training_run
from asva_platform.training.spec import RunSpec, TrainerSpec

__all__ = [
    "Result",
    "run",
    "preflight",
    "check_config",
    "AUDIO_GAP_METRICS",
    "REPORTED_METRICS",
    "TRAINING_METRICS",
    "VALIDATION",
    "VALIDATION_METRIC",
]

log = logging.getLogger(__name__)


@dataclass
class Result:
    run_id: str
    """MLflow run id."""
    checkpoint_uri: str
    """The last checkpoint (every rank's shards), e.g. s3://bucket/runs/<name>/step_00000020."""
    final_step: int
    final_loss: float
    samples_per_s: float
    """Training throughput of the last report window (all workers)."""
    export_uri: str = ""
    """diffusers UNet folder of the final weights (empty when train.export is off)."""
    export_ema_uri: str = ""
    mlflow_url: str = ""
    """The run's page in the MLflow UI (empty with a local tracking file)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The last reported metrics."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: run_id, checkpoint_uri, final_step, final_loss, samples_per_s (+ export),
        ``validation``: the last validation's ``val_*`` metrics (held-out loss, audio gap), and ``metrics``: the
        rest of the last report (step time, ``rank_*_bytes`` and ``rank_peak_rss_gb``, ``resume_*_s``)."""
        out = {k: v for k, v in asdict(self).items() if k != "metrics"}
        out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
        validation = {k: v for k, v in self.metrics.items() if k.startswith("val_")}
        return {
            **out,
            "validation": validation,
            "metrics": {k: v for k, v in self.metrics.items() if k not in validation},
        }

    def summary_line(self) -> str:
        return (
            f"train: step {self.final_step}, loss {self.final_loss:.4f}, {self.samples_per_s:.2f} samples/s; "
            f"checkpoint {self.checkpoint_uri}"
            + (f"; export {self.export_uri}" if self.export_uri else "")
            + (f"; MLflow {self.mlflow_url}" if self.mlflow_url else "")
        )


@dataclass
class Preflight:
    tracking_uri: str
    storage: Storage
    runs_root: str
    cache_uri: str = ""
    cache_id: str = ""
    dataset: CacheHandle | None = None
    """Cached mode: the opened cache."""


def _with_scheme(fs, path: str) -> str:
    """A pyarrow path as a URI (S3 paths carry no scheme)."""
    return f"s3://{path}" if fs is not None and fs.type_name == "s3" else path


def preflight(
    experiment: ExperimentConfig, storage_path: str | None = None, handle: CacheHandle | None = None
) -> Preflight:
    """Everything checkable without a cluster; one-line errors (UserError/StorageError/TrackingError)."""
    t = experiment.train
    check_local_cluster_fits(t, experiment.cluster)
    tracking_uri = resolve_tracking_uri(experiment.tracking)
    storage = Storage.from_config(experiment.storage)
    runs_root = storage_path or experiment.storage.runs_root
    storage.check_reachable(runs_root)
    pre = Preflight(tracking_uri, storage, runs_root)
    check_config(experiment)
    if t.data_mode == "cached":
        if handle is None:
            handle = open_cache(storage, t.cache, experiment.storage.cache_root)
        layout = handle.layout
        if layout.num_frames != experiment.sampling.num_frames:
            raise UserError(
                f"cache {handle.cache_id}: {layout.num_frames} frames per window but "
                f"sampling.num_frames is {experiment.sampling.num_frames}"
            )
        rows = handle.num_rows("train")
        if rows // t.num_workers < t.batch_size_per_worker:
            raise UserError(
                f"cache {handle.cache_id}: {rows} training windows are too few for "
                f"{t.num_workers} workers x batch_size_per_worker {t.batch_size_per_worker}"
            )
        pre.cache_uri, pre.cache_id, pre.dataset = handle.uri, handle.cache_id, handle
    else:
        dataset_access(experiment.dataset, storage)
    return pre


def check_config(experiment: ExperimentConfig) -> None:
    """What the config alone shows training cannot run with (``jobs.train --check``, so ``asva submit`` refuses
    it before anything reaches the cluster); one-line UserErrors."""
    t = experiment.train
    if t.data_mode == "cached" and not t.cache:
        raise UserError(
            "train.cache: set a cache_id or URI (build one with `python -m jobs.preprocess`), "
            "or train from raw clips with train.data_mode=online"
        )
    if t.data_mode == "online" and not experiment.model.text_encodings:
        raise UserError("model.text_encodings: required for online training (the class prompt encodings)")


def check_local_cluster_fits(t: TrainConfig, cluster_cfg: ClusterConfig) -> None:
    """A local Ray (no cluster to join) can never grow, so more workers than it holds would make Ray Train
    wait for resources forever: fail now, before Ray starts. A joined cluster may autoscale, and inside Ray
    (a Tune trial, an already connected driver) this process's CPUs/GPUs are not the cluster's: not checked."""
    import sys

    ray = sys.modules.get("ray")
    if joined(cluster_cfg) or (ray is not None and ray.is_initialized()):
        return
    fewest = t.min_workers if t.elastic else t.num_workers
    key = "train.min_workers" if t.elastic else "train.num_workers"  # the size Ray Train must start with
    need = {"CPU": fewest * t.cpus_per_worker, "GPU": float(fewest) if t.use_gpu else 0.0}
    check_fits(
        f"{key}: {fewest} workers x cpus_per_worker {t.cpus_per_worker:g}",
        need,
        local_resources(cluster_cfg),
        "lower it, or raise cluster.num_cpus",
        may_grow=False,
    )


SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints, in its folder


def latest_checkpoint_uri(storage: Storage, run_uri: str) -> str | None:
    """The checkpoint a re-run with this name would resume from (Ray Train's snapshot), if any."""
    snapshot = join(run_uri, SNAPSHOT)
    if not storage.exists(snapshot):
        return None
    latest = (storage.read_json(snapshot).get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")
    return join(run_uri, latest) if latest else None


def check_resumable(
    experiment: ExperimentConfig, storage: Storage, run_uri: str, log_fn: Callable[[str], None] = print
) -> tuple[str | None, ExperimentConfig]:
    """Before taking resources: ``(checkpoint to resume from or None, the config to train with)``.

    The ZeRO stage must be the checkpoint's. Another worker count is fine (the shards are resharded through
    a universal checkpoint); the global batch is kept by setting ``train.gradient_accumulation_steps`` so that
    batch_size_per_worker x accumulation x num_workers equals the checkpoint's, or one clear error when no
    whole number of accumulation steps does."""
    ckpt = latest_checkpoint_uri(storage, run_uri)
    if ckpt is None:
        return None, experiment
    state = TrainerState.from_json(storage.read_json(join(ckpt, STATE_FILE)), join(ckpt, STATE_FILE))
    t = experiment.train
    if state.zero_stage != t.zero_stage:
        raise UserError(
            f"run {run_uri} resumes from {ckpt}, written with ZeRO stage {state.zero_stage}; set "
            f"train.zero_stage={state.zero_stage} or use a new name"
        )
    saved = state.saved_global_batch
    if not state.world_size or state.world_size == t.num_workers or not saved or saved == t.global_batch_size:
        return ckpt, experiment
    accumulation = t.accumulation_for(t.num_workers, saved)
    if accumulation is None:
        raise UserError(
            f"run {run_uri} resumes on {t.num_workers} workers from {ckpt}, trained with a global batch "
            f"of {saved} clips on {state.world_size}: batch_size_per_worker {t.batch_size_per_worker} x "
            f"{t.num_workers} workers divides no whole number of accumulation steps into it; choose "
            f"train.batch_size_per_worker and train.num_workers whose product divides {saved}"
        )
    log_fn(
        f"resharding {ckpt} from {state.world_size} to {t.num_workers} workers: gradient accumulation "
        f"{t.gradient_accumulation_steps} -> {accumulation} keeps the global batch at {saved} clips"
    )
    return ckpt, cfgmod.replace_dotted(experiment, {"train.gradient_accumulation_steps": accumulation})


def scaling_config(t):
    from ray.train import ScalingConfig

    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}
    workers = (t.min_workers, t.num_workers) if t.elastic else t.num_workers
    return ScalingConfig(
        num_workers=workers,
        use_gpu=t.use_gpu,
        resources_per_worker=resources,
        placement_strategy=t.placement_strategy,
        elastic_resize_monitor_interval_s=t.elastic_resize_check_s,
    )


def trainer_spec(experiment: ExperimentConfig, run: RunSpec) -> TrainerSpec:
    """What every worker reads: the experiment's sections training uses, and the run."""
    e = experiment
    return TrainerSpec(e.train, e.model, e.sampling, e.dataset, e.storage, e.generate, run)


def build_trainer(
    experiment: ExperimentConfig,
    spec: RunSpec,
    runs_root: str,
    storage: Storage,
    datasets: dict | None = None,
    callbacks: list | None = None,
    run_name: str | None = None,
):
    """The TorchTrainer for one training run; checkpoints go to ``<runs_root>/<run_name or exp.name>/``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = experiment.train
    fs, path = storage.filesystem(runs_root)
    run_config = RunConfig(
        name=run_name or experiment.name,
        storage_path=path,  # no scheme: the filesystem says where
        storage_filesystem=fs,
        failure_config=FailureConfig(max_failures=t.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
        callbacks=callbacks or None,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(trainer_spec(experiment, spec)),
        scaling_config=scaling_config(t),
        run_config=run_config,
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        datasets=datasets,
    )


def training_dataset(pre: Preflight, in_memory: bool):
    handle = pre.dataset
    columns = [c for c in TRAINING_COLUMNS if c in handle.layout.columns]
    if not in_memory:
        return {"train": handle.ray_dataset("train", columns).randomize_block_order()}
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Read once; every epoch (and every restart) streams from the object store. A block lives in the object
    # store of the node whose task read it, and a lost node takes its blocks along: a restarted worker group
    # would wait for them forever. So the read runs on the driver's node, the one node a run cannot lose
    # anyway (Ray Train keeps its controller there).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ds = handle.ray_dataset("train", columns, ray_remote_args={"scheduling_strategy": here}).materialize()
    return {"train": ds.randomize_block_order()}


def run(
    experiment: ExperimentConfig,
    *,
    callbacks: list | None = None,
    run_name: str | None = None,
    storage_path: str | None = None,
    parent_run_id: str = "",
    run_tags: dict[str, str] | None = None,
    log_fn: Callable[[str], None] = print,
) -> Result:
    """Train ``experiment`` end to end and return the result (see the module doc for the order of work).
    ``run_tags`` are added to the MLflow run's tags (a sweep's trial id, for one)."""
    t = experiment.train
    name = run_name or experiment.name
    clock = _Clock()
    pre = preflight(experiment, storage_path)
    run_uri = join(pre.runs_root, name)
    resume_from, experiment = check_resumable(experiment, pre.storage, run_uri, log_fn)
    t = experiment.train
    tags = {
        TAG_CACHE_ID: pre.cache_id,
        TAG_ZERO_STAGE: str(t.zero_stage),
        TAG_WORLD_SIZE: str(t.num_workers),
        TAG_DATA_MODE: t.data_mode,
        **(run_tags or {}),
    }
    run_id, resumed = open_training_run(
        pre.tracking_uri,
        experiment.tracking.experiment,
        LoggedConfig.of(experiment),
        run_uri,
        name,
        tags,
        describe_training(experiment, run_uri, pre.cache_id),
        parent_run_id,
    )
    log_fn(
        f"{'resuming' if resumed else 'starting'} training run {name}: MLflow run {run_id}, checkpoints under "
        f"{run_uri}{f', resuming from {resume_from}' if resume_from else ''} ({clock.lap('preflight')})"
    )
    spec = RunSpec(pre.tracking_uri, run_id, run_uri, pre.cache_uri, pre.cache_id)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pre.tracking_uri)
    url = ui_url(pre.tracking_uri, client.get_run(run_id).info.experiment_id, run_id)
    if url:
        log_fn(f"MLflow: {url}")
    with run_status(client, run_id):
        init_ray(experiment.cluster)
        datasets = training_dataset(pre, t.cache_in_memory) if t.data_mode == "cached" else None
        clock.lap("ray + data")
        trainer = build_trainer(experiment, spec, pre.runs_root, pre.storage, datasets, callbacks, name)
        try:
            result = trainer.fit()
            if result.error is not None:
                raise result.error
        except Exception as err:
            lost = pre.storage.lost_connection(err)
            if lost is None:
                raise
            # Ray Train records a checkpoint only once its upload finished, so the latest one is whole
            raise StorageError(
                f"training stopped: {lost}; every checkpoint recorded under {run_uri} is complete: "
                f"re-run the same command to resume from the latest"
            ) from err
        clock.lap("fit")
        if result.checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        fs, _ = pre.storage.filesystem(pre.runs_root)
        checkpoint_uri = _with_scheme(fs, result.checkpoint.path)
        metrics = dict(result.metrics or {})
        out = Result(
            run_id,
            checkpoint_uri,
            int(metrics.get("step", 0)),
            float(metrics.get("loss", math.nan)),
            float(metrics.get("samples_per_s", math.nan)),
            mlflow_url=url,
            metrics=metrics,
        )
        if t.export:
            out.export_uri = export_checkpoint(
                experiment.model, checkpoint_uri, join(run_uri, "export", "unet"), pre.storage
            )
            if t.ema:
                out.export_ema_uri = export_checkpoint(
                    experiment.model,
                    checkpoint_uri,
                    join(run_uri, "export", "unet_ema"),
                    pre.storage,
                    ema=True,
                )
            clock.lap("export")
        client.set_tag(run_id, TAG_CHECKPOINT, out.checkpoint_uri)
        if out.export_uri:
            client.set_tag(run_id, TAG_EXPORT, out.export_uri)
    log_fn(
        f"finished at step {out.final_step}: loss {out.final_loss:.4f}, {out.samples_per_s:.2f} samples/s; "
        f"checkpoint {out.checkpoint_uri} ({clock.summary()})"
    )
    return out


def describe_training(experiment: ExperimentConfig, run_uri: str, cache_id: str) -> str:
    """The run's description in the MLflow UI: what was trained on what, and where its outputs are."""
    t = experiment.train
    data = (
        f"the latent cache `{cache_id}`"
        if t.data_mode == "cached"
        else "raw clips decoded in the loop (online)"
    )
    workers = f"{t.min_workers}-{t.num_workers}" if t.elastic else str(t.num_workers)
    lines = [
        f"**{experiment.name}** recipe ({experiment.protocol} protocol): {t.max_steps} steps of "
        f"{t.global_batch_size} clips ({t.batch_size_per_worker} x {t.gradient_accumulation_steps} accumulation "
        f"x {workers} workers), ZeRO-{t.zero_stage} {t.precision}, lr {t.lr:g}, from {data}.",
        f"- checkpoints: `{run_uri}` (the latest is tag `{TAG_CHECKPOINT}`)",
        "- metrics: `loss`, `val_loss` and the audio gap `val_loss_*` (chart view); `checkpoint_stall_s`",
    ]
    if t.validate_every and t.num_samples:
        lines.append(
            f"- samples: every {t.validate_every} steps, artifacts `samples/step_*` (mp4 with audio)"
        )
    if t.export:
        lines.append(f"- export: `{run_uri}/export/unet` after the last step (tag `{TAG_EXPORT}`)")
    return "\n".join(lines)


class _Clock:
    """Wall time of the job's phases, for the closing log line."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> str:
        now = time.perf_counter()
        self.laps.append((name, now - self.t))
        self.t = now
        return f"{name} {self.laps[-1][1]:.1f}s"

    def summary(self) -> str:
        return ", ".join(f"{n} {s:.1f}s" for n, s in self.laps)
