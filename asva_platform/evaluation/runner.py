"""``evaluate_checkpoint``: the paper's evaluation of one checkpoint, in this process or on Ray actors.

Order of work, so bad input costs nothing:

1. :func:`prepare_evaluation` (no Ray, no weights loaded): output storage reachable, checkpoint reference
   resolved, metric weights present, the split read and every chosen video probed, the evaluation's
   identity and output URI decided;
2. :func:`run_evaluation`: workers (:class:`~asva_platform.evaluation.worker.EvalWorker`) generate, write,
   re-decode and score whole videos -- in this process, or one Ray actor per GPU (or per
   ``eval.cpus_per_worker`` CPUs) pulling videos from a queue; the driver then reduces all per-clip scores
   to the reported metrics (FID/FVD need every clip at once) and a per-class table, and writes
   ``scores.npz`` and ``eval.json`` next to the clips.

Outputs live under ``<eval.output_root or storage.root/evals>/<eval_id>/``; ``eval_id`` hashes what
determines the generated clips (checkpoint files, model, sampling, dataset, the ``generate`` section), so
re-running an interrupted evaluation reuses the clips it already wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asva_model.config import ModelConfig
from asva_model.data.config import DatasetConfig, SamplingConfig
from asva_model.metrics import catalogue
from asva_model.metrics.compute import ClipScores, per_class_metrics, summarize
from asva_model.metrics.config import MetricsConfig
from asva_platform import config as cfgmod
from asva_platform.actors import map_on_actors
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.artifacts.evaluation import (
    CLASSES_ARRAY,
    CLIP_NAMES_ARRAY,
    RECORD_FILE,
    SCORES_FILE,
    EvaluationRecord,
)
from asva_platform.artifacts.provenance import code_version, names_sha256
from asva_platform.cluster import ClusterConfig
from asva_platform.errors import UserError
from asva_platform.evaluation.config import EvalConfig
from asva_platform.evaluation.plan import EvalPlan, plan_evaluation
from asva_platform.evaluation.worker import EvalWorker, VideoResult, WorkerSpec, check_metric_weights
from asva_platform.inference.checkpoints import checkpoint_fingerprint, resolve_checkpoint
from asva_platform.inference.config import GenerateConfig
from asva_platform.progress import Progress
from asva_platform.storage import Storage, StorageConfig, join

EVALS_DIR = "evals"


@dataclass
class EvalSettings:
    """What an evaluation reads from the experiment, section by section (the job assembles it)."""

    eval: EvalConfig
    generate: GenerateConfig
    model: ModelConfig
    sampling: SamplingConfig
    dataset: DatasetConfig
    storage: StorageConfig
    cluster: ClusterConfig
    tracking_uri: str
    """Where MLflow run ids as checkpoint references are looked up."""
    protocol: str
    """`authors`, `exact` or `mixed`: which protocol the numbers follow."""
    quirks: dict[str, Any]
    """Each protocol quirk's dotted key and value."""


@dataclass
class PreparedEvaluation:
    """Everything decided before any worker starts."""

    settings: EvalSettings
    storage: Storage
    checkpoint: ResolvedCheckpoint
    plan: EvalPlan
    eval_id: str
    eval_uri: str
    name: str
    """Human-readable: the checkpoint's label, the generation settings, the protocol (:func:`evaluation_name`)."""


@dataclass
class EvalResult:
    record: EvaluationRecord
    """What was generated, how, and what it measured (``eval.json``)."""
    seconds: float = 0.0
    """Wall time of the whole evaluation."""
    generate_seconds: float = 0.0
    """Generation + mp4 writing + re-decoding, summed over workers."""
    score_seconds: float = 0.0
    """Metric feature extraction, summed over workers."""
    clips_generated: int = 0
    """Windows generated now (the others were reused from an interrupted run of the same evaluation)."""
    workers: int = 1
    """Workers that ran (1 = in process)."""
    parallel: bool = False
    """Whether Ray actors ran the clips."""
    mlflow_run_id: str = ""
    """The run the metrics were logged to (set by the job)."""
    mlflow_url: str = ""
    """Its per-class table in the MLflow UI (set by the job; empty with a local tracking file)."""

    @property
    def run_metrics(self) -> dict[str, float]:
        """What the run took, logged beside the metrics."""
        return {"seconds": self.seconds, "clips_generated": self.clips_generated}

    def to_json(self) -> dict:
        """The job's ``--json`` output."""
        r = self.record
        return {
            "name": r.name,
            "eval_id": r.eval_id,
            "eval_uri": r.eval_uri,
            "checkpoint": r.checkpoint.to_json(),
            "generate": cfgmod.to_dict(r.generate),
            "metrics": r.metrics,
            "num_clips": len(r.clips),
            "clips_generated": self.clips_generated,
            "skipped": r.skipped,
            "seconds": round(self.seconds, 3),
            "generate_seconds": round(self.generate_seconds, 3),
            "score_seconds": round(self.score_seconds, 3),
            "workers": self.workers,
            "parallel": self.parallel,
            "mlflow_run_id": self.mlflow_run_id,
            "mlflow_url": self.mlflow_url,
        }

    def summary_line(self) -> str:
        r = self.record
        shown = ", ".join(format_metrics(r.metrics))
        return (
            f"evaluate: {r.checkpoint.label} on {len(r.clips)} clip(s) ({self.clips_generated} generated, "
            f"protocol {r.protocol}, {len(r.skipped)} video(s) skipped) with {self.workers} worker(s) in "
            f"{self.seconds:.1f} s: {shown}"
            + (f"; per-class table {self.mlflow_url}" if self.mlflow_url else "")
        )


def format_metrics(metrics: dict[str, float]) -> list[str]:
    """``name value`` per reported metric in display order, with its 95 % interval in brackets where it has one
    (``Sync 0.31 [0.22, 0.4]``); spreads, interval ends and the clip count are left out."""
    out = []
    for key, value in catalogue.headline(metrics).items():
        bounds = catalogue.interval(metrics, key)
        out.append(f"{key} {value:.4g}" + ("" if bounds is None else f" [{bounds[0]:.4g}, {bounds[1]:.4g}]"))
    return out


def evaluation_name(checkpoint: ResolvedCheckpoint, generate: GenerateConfig, protocol: str) -> str:
    """``<checkpoint label>_audio_guidance_scale=4_text_guidance_scale=1_num_inference_steps=25_seed=0_<protocol>``:
    the generation settings that tell evaluations of one checkpoint apart, by their own names (joined by ``_``:
    MLflow refuses a comma in an artifact path, and the name is the evaluation's artifact folder)."""
    shown = ("audio_guidance_scale", "text_guidance_scale", "num_inference_steps", "seed")
    values = "_".join(f"{k}={getattr(generate, k):g}" for k in shown)
    return f"{checkpoint.label}_{values}_{protocol}"


def evaluation_identity(settings: EvalSettings, checkpoint: ResolvedCheckpoint, storage: Storage) -> str:
    """Hash of everything the generated clips depend on (not the metrics, workers or number of videos)."""
    identity = {
        "checkpoint": checkpoint_fingerprint(checkpoint, storage),
        "model": cfgmod.to_dict(settings.model),
        "sampling": cfgmod.to_dict(settings.sampling),
        "dataset": cfgmod.to_dict(settings.dataset),
        "split": settings.eval.split,
        "generation": cfgmod.to_dict(settings.generate),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def check_sync_shift(metrics_cfg: MetricsConfig, sampling: SamplingConfig) -> None:
    """The Sync control rolls the clip's audio by ``eval.metrics.sync_shift_s``: it must be shorter than a clip."""
    if "sync" in metrics_cfg.metrics and metrics_cfg.sync_shift_s >= sampling.clip_duration:
        raise UserError(
            f"eval.metrics.sync_shift_s: must be below sampling.clip_duration "
            f"({sampling.clip_duration:g} s), got {metrics_cfg.sync_shift_s:g}"
        )


def prepare_evaluation(
    settings: EvalSettings,
    checkpoint: str | ResolvedCheckpoint | None = None,
    storage: Storage | None = None,
    log: Callable[[str], None] = print,
) -> PreparedEvaluation:
    """Validate everything and plan the evaluation; raises UserError/StorageError (one line)."""
    e = settings.eval
    storage = storage or Storage.from_config(settings.storage)
    out_root = e.output_root or join(settings.storage.root, EVALS_DIR)
    storage.check_reachable(out_root)
    if not isinstance(checkpoint, ResolvedCheckpoint):
        checkpoint = resolve_checkpoint(checkpoint or e.checkpoint, storage, settings.tracking_uri)
    check_metric_weights(e.metrics, storage)
    check_sync_shift(e.metrics, settings.sampling)
    plan = plan_evaluation(e, settings.dataset, settings.sampling, storage)
    eval_id = evaluation_identity(settings, checkpoint, storage)
    name = evaluation_name(checkpoint, settings.generate, settings.protocol)
    log(
        f"evaluate {name}: {len(plan.tasks)} video(s), {len(plan.windows)} clip(s), {len(plan.skipped)} skipped; "
        f"outputs at {join(out_root, eval_id)}"
    )
    return PreparedEvaluation(settings, storage, checkpoint, plan, eval_id, join(out_root, eval_id), name)


def worker_spec(prep: PreparedEvaluation, device: str, threads: int = 0) -> WorkerSpec:
    s = prep.settings
    return WorkerSpec(
        s.model,
        s.sampling,
        s.generate,
        s.eval.metrics,
        s.dataset,
        s.storage,
        prep.checkpoint,
        prep.eval_uri,
        s.eval.save_gt_videos,
        device,
        threads,
    )


# ---------------------------------------------------------------------------------------------
# Executors: the same worker in this process or on Ray actors


def run_in_process(
    prep: PreparedEvaluation, log: Callable[[str], None] = print
) -> tuple[list[VideoResult], int]:
    worker = EvalWorker(worker_spec(prep, prep.settings.eval.device))
    results, progress = [], Progress("video", len(prep.plan.tasks))
    for i, task in enumerate(prep.plan.tasks, start=1):
        results.append(worker.run(task))
        log(progress.line(i))
    return results, 1


def run_on_ray(prep: PreparedEvaluation, log: Callable[[str], None] = print) -> tuple[list[VideoResult], int]:
    """Actors, each with the model and metric networks loaded once, take whole videos from a queue."""

    def make_spec(device: str, threads: int) -> WorkerSpec:
        return worker_spec(prep, device, threads)

    s = prep.settings
    results, n, _ = map_on_actors(s.eval, s.cluster, EvalWorker, make_spec, prep.plan.tasks, log, "video")
    return results, n


# ---------------------------------------------------------------------------------------------
# Reduction and outputs


def evaluation_provenance(prep: PreparedEvaluation, results: list[VideoResult]) -> dict[str, str]:
    """The workers' network hashes (a value two workers disagree on is kept as ``mixed:...``: it then matches
    no other evaluation), the scored videos, the protocol and the code version."""
    merged: dict[str, set[str]] = {}
    for r in results:
        for k, v in r.provenance.items():
            merged.setdefault(k, set()).add(v)
    out = {k: v.pop() if len(v) == 1 else "mixed:" + ",".join(sorted(v)) for k, v in merged.items()}
    out["videos"] = names_sha256(sorted(t.entry.name for t in prep.plan.tasks))
    out["protocol"] = prep.settings.protocol
    out["code"] = code_version()
    return out


def reduce_results(
    prep: PreparedEvaluation, results: list[VideoResult], workers: int, parallel: bool, started: float
) -> EvalResult:
    order = {t.entry.name: i for i, t in enumerate(prep.plan.tasks)}
    results = sorted(results, key=lambda r: order[r.video])  # Ray returns videos as they finish
    scores = ClipScores.concat([r.scores for r in results])
    clips = [c for r in results for c in r.clips]
    s = prep.settings
    names = s.eval.metrics.metrics
    record = EvaluationRecord(
        prep.name,
        prep.eval_id,
        prep.eval_uri,
        prep.checkpoint,
        s.generate,
        s.protocol,
        s.quirks,
        s.eval.split,
        s.eval.max_videos,
        list(names),
        cfgmod.to_dict(s.sampling),
        metrics=summarize(scores, names),
        per_class=per_class_metrics(scores, [c.class_dir for c in clips], names),
        clips=clips,
        skipped=prep.plan.skipped,
        provenance=evaluation_provenance(prep, results),
    )
    result = EvalResult(
        record,
        generate_seconds=sum(r.generate_seconds for r in results),
        score_seconds=sum(r.score_seconds for r in results),
        clips_generated=sum(r.generated for r in results),
        workers=workers,
        parallel=parallel,
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        **scores.arrays,
        **{
            CLIP_NAMES_ARRAY: np.asarray([c.name for c in clips]),
            CLASSES_ARRAY: np.asarray([c.class_dir for c in clips]),
        },
    )
    prep.storage.write_bytes(join(prep.eval_uri, SCORES_FILE), buf.getvalue())
    result.seconds = time.perf_counter() - started
    prep.storage.write_json(join(prep.eval_uri, RECORD_FILE), record.to_json())
    return result


def run_evaluation(
    prep: PreparedEvaluation,
    parallel: bool | None = None,
    log: Callable[[str], None] = print,
    started: float | None = None,
) -> EvalResult:
    """Generate and score every planned clip; ``parallel`` (default ``eval.parallel``) uses Ray actors."""
    started = time.perf_counter() if started is None else started
    parallel = prep.settings.eval.parallel if parallel is None else parallel
    results, workers = (run_on_ray if parallel else run_in_process)(prep, log)
    return reduce_results(prep, results, workers, parallel, started)


def evaluate_checkpoint(
    settings: EvalSettings,
    checkpoint_ref: str | ResolvedCheckpoint | None = None,
    *,
    parallel: bool | None = None,
    storage: Storage | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Evaluate ``checkpoint_ref`` (default ``eval.checkpoint``: `init`, a storage URI, or an MLflow run id)
    with the ``eval`` and ``generate`` settings. ``parallel=False`` never touches Ray (for callers already inside
    a Ray task, e.g. a sweep trial); ``parallel=True`` starts or joins Ray and spreads videos over actors.
    Nothing is logged to MLflow here: see :func:`asva_platform.artifacts.evaluation.log_evaluation`."""
    started = time.perf_counter()
    prep = prepare_evaluation(settings, checkpoint_ref, storage, log)
    return run_evaluation(prep, parallel, log, started)
