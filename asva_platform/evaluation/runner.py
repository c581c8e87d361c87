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
determines the generated clips (checkpoint files, model, sampling, dataset, guidance, steps, seed), so
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

from asva_model.metrics.compute import ClipScores, per_class_metrics, summarize
from asva_platform import config as cfgmod
from asva_platform.actors import map_on_actors
from asva_platform.artifacts.checkpoint_ref import (
    ResolvedCheckpoint,
    checkpoint_fingerprint,
    resolve_checkpoint,
)
from asva_platform.artifacts.evaluation import CLASSES_ARRAY, CLIP_NAMES_ARRAY, RECORD_FILE, SCORES_FILE
from asva_platform.errors import UserError
from asva_platform.evaluation.plan import EvalPlan, plan_evaluation
from asva_platform.evaluation.worker import EvalWorker, VideoResult, WorkerSpec, check_metric_weights
from asva_platform.progress import Progress
from asva_platform.storage import Storage, join

EVALS_DIR = "evals"


@dataclass
class PreparedEvaluation:
    """Everything decided before any worker starts."""

    cfg: Any
    storage: Storage
    checkpoint: ResolvedCheckpoint
    plan: EvalPlan
    eval_id: str
    eval_uri: str
    name: str
    """Human-readable: ``<checkpoint label>_ag-<s>_tg-<t>_steps-<n>_seed-<k>_<protocol>``."""


@dataclass
class EvalResult:
    name: str
    """Evaluation name (also the MLflow artifact folder eval/<name>)."""
    eval_id: str
    """Hash of what determines the generated clips."""
    eval_uri: str
    """Where the clips, scores and record were written."""
    checkpoint: ResolvedCheckpoint
    """What was evaluated."""
    metrics: dict[str, float]
    """The reported numbers: FID, FVD, IA, IT, RelSync, AlignSync (+ *_std), Sync (+ Sync_ci_low/high),
    Sync_shifted, Sync_win_rate (+ _ci_low/high), Sync_gt, SyncLag_s, num_clips (docs/metrics.md)."""
    per_class: dict[str, dict[str, float]]
    """The same per class."""
    clips: list[dict]
    """One record per window: name, video, class, prompt, index, start, video_uri, gt_uri."""
    skipped: list[dict]
    """Videos left out, with their reason."""
    settings: dict
    """The eval settings and sampling that produced these numbers."""
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

    def record(self) -> dict:
        """What ``eval.json`` holds (the comparison page reads it)."""
        return {"name": self.name, "eval_id": self.eval_id, "eval_uri": self.eval_uri,
                "checkpoint": self.checkpoint.to_json(), "metrics": self.metrics, "per_class": self.per_class,
                "clips": self.clips, "skipped": self.skipped, "settings": self.settings}

    def to_json(self) -> dict:
        """The job's ``--json`` output."""
        return {"name": self.name, "eval_id": self.eval_id, "eval_uri": self.eval_uri,
                "checkpoint": self.checkpoint.to_json(), "metrics": self.metrics, "num_clips": len(self.clips),
                "clips_generated": self.clips_generated, "skipped": self.skipped, "seconds": round(self.seconds, 3),
                "generate_seconds": round(self.generate_seconds, 3), "score_seconds": round(self.score_seconds, 3),
                "workers": self.workers, "parallel": self.parallel, "mlflow_run_id": self.mlflow_run_id,
                "mlflow_url": self.mlflow_url}

    def summary_line(self) -> str:
        shown = ", ".join(format_metrics(self.metrics))
        return (f"evaluate: {self.checkpoint.label} on {len(self.clips)} clip(s) ({self.clips_generated} generated, "
                f"protocol {self.settings.get('protocol', '?')}, "
                f"{len(self.skipped)} video(s) skipped) with {self.workers} worker(s) in {self.seconds:.1f} s: {shown}"
                + (f"; per-class table {self.mlflow_url}" if self.mlflow_url else ""))


def format_metrics(metrics: dict[str, float]) -> list[str]:
    """``name value`` per reported metric, with its 95 % interval in brackets where it has one
    (``Sync 0.31 [0.22, 0.4]``); spreads, interval ends and the clip count are left out."""
    out = []
    for key, value in metrics.items():
        if key.endswith(("_std", "_ci_low", "_ci_high")) or key == "num_clips":
            continue
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        out.append(f"{key} {value:.4g}" + ("" if low is None or high is None else f" [{low:.4g}, {high:.4g}]"))
    return out


def evaluation_name(checkpoint: ResolvedCheckpoint, cfg) -> str:
    e = cfg.eval
    return (f"{checkpoint.label}_ag-{e.audio_guidance_scale:g}_tg-{e.text_guidance_scale:g}"
            f"_steps-{e.num_inference_steps}_seed-{e.seed}_{cfg.protocol}")


def generation_settings(cfg) -> dict:
    e = cfg.eval
    return {"audio_guidance_scale": e.audio_guidance_scale, "text_guidance_scale": e.text_guidance_scale,
            "num_inference_steps": e.num_inference_steps, "seed": e.seed, "sampler": e.sampler,
            "audio_encoder_source": e.audio_encoder_source}


def protocol_settings(cfg) -> dict:
    """Which protocol produced the numbers, and each quirk's value (docs/metrics.md, "Reproducing the paper")."""
    return {"protocol": cfg.protocol, "quirks": cfg.protocol_quirks()}


def evaluation_identity(cfg, checkpoint: ResolvedCheckpoint, storage: Storage) -> str:
    """Hash of everything the generated clips depend on (not the metrics, workers or number of videos)."""
    identity = {"checkpoint": checkpoint_fingerprint(checkpoint, storage), "model": cfgmod.to_dict(cfg.model),
                "sampling": cfgmod.to_dict(cfg.sampling), "dataset": cfgmod.to_dict(cfg.dataset),
                "split": cfg.eval.split, "generation": generation_settings(cfg)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def check_sync_shift(cfg) -> None:
    """The Sync control rolls the clip's audio by ``eval.metrics.sync_shift_s``: it must be shorter than a clip."""
    m, clip_s = cfg.eval.metrics, cfg.sampling.clip_duration
    if "sync" in m.metrics and m.sync_shift_s >= clip_s:
        raise UserError(f"eval.metrics.sync_shift_s: must be below sampling.clip_duration ({clip_s:g} s), "
                        f"got {m.sync_shift_s:g}")


def prepare_evaluation(cfg, checkpoint: str | ResolvedCheckpoint | None = None, storage: Storage | None = None,
                       log: Callable[[str], None] = print) -> PreparedEvaluation:
    """Validate everything and plan the evaluation; raises UserError/StorageError (one line)."""
    storage = storage or Storage.from_config(cfg.storage)
    out_root = cfg.eval.output_root or join(cfg.storage.root, EVALS_DIR)
    storage.check_reachable(out_root)
    if not isinstance(checkpoint, ResolvedCheckpoint):
        checkpoint = resolve_checkpoint(checkpoint or cfg.eval.checkpoint, storage, cfg.tracking.resolved_uri())
    check_metric_weights(cfg.eval.metrics, storage)
    check_sync_shift(cfg)
    plan = plan_evaluation(cfg, storage)
    eval_id = evaluation_identity(cfg, checkpoint, storage)
    name = evaluation_name(checkpoint, cfg)
    log(f"evaluate {name}: {len(plan.tasks)} video(s), {len(plan.windows)} clip(s), {len(plan.skipped)} skipped; "
        f"outputs at {join(out_root, eval_id)}")
    return PreparedEvaluation(cfg, storage, checkpoint, plan, eval_id, join(out_root, eval_id), name)


# ---------------------------------------------------------------------------------------------
# Executors: the same worker in this process or on Ray actors


def run_in_process(prep: PreparedEvaluation, log: Callable[[str], None] = print) -> tuple[list[VideoResult], int]:
    worker = EvalWorker(WorkerSpec(prep.cfg, prep.checkpoint, prep.eval_uri, prep.cfg.eval.device))
    results, progress = [], Progress("video", len(prep.plan.tasks))
    for i, task in enumerate(prep.plan.tasks, start=1):
        results.append(worker.run(task))
        log(progress.line(i))
    return results, 1


def run_on_ray(prep: PreparedEvaluation, log: Callable[[str], None] = print) -> tuple[list[VideoResult], int]:
    """Actors, each with the model and metric networks loaded once, take whole videos from a queue."""
    def make_spec(device: str, threads: int) -> WorkerSpec:
        return WorkerSpec(prep.cfg, prep.checkpoint, prep.eval_uri, device, threads)

    results, n, _ = map_on_actors(prep.cfg, EvalWorker, make_spec, prep.plan.tasks, log, "video")
    return results, n


# ---------------------------------------------------------------------------------------------
# Reduction and outputs


def reduce_results(prep: PreparedEvaluation, results: list[VideoResult], workers: int, parallel: bool,
                   started: float) -> EvalResult:

    order = {t.entry.name: i for i, t in enumerate(prep.plan.tasks)}
    results = sorted(results, key=lambda r: order[r.video])  # Ray returns videos as they finish
    scores = ClipScores.concat([r.scores for r in results])
    clips = [c for r in results for c in r.clips]
    names = prep.cfg.eval.metrics.metrics
    metrics = summarize(scores, names)
    per_class = per_class_metrics(scores, [c["class"] for c in clips], names)
    settings = {**generation_settings(prep.cfg), "split": prep.cfg.eval.split, "max_videos": prep.cfg.eval.max_videos,
                "metrics": list(names), "sampling": cfgmod.to_dict(prep.cfg.sampling), **protocol_settings(prep.cfg)}
    result = EvalResult(prep.name, prep.eval_id, prep.eval_uri, prep.checkpoint, metrics, per_class, clips,
                        prep.plan.skipped, settings, generate_seconds=sum(r.generate_seconds for r in results),
                        score_seconds=sum(r.score_seconds for r in results),
                        clips_generated=sum(r.generated for r in results), workers=workers, parallel=parallel)
    buf = io.BytesIO()
    np.savez(buf, **scores.arrays, **{CLIP_NAMES_ARRAY: np.asarray([c["name"] for c in clips]),
                                      CLASSES_ARRAY: np.asarray([c["class"] for c in clips])})
    prep.storage.write_bytes(join(prep.eval_uri, SCORES_FILE), buf.getvalue())
    result.seconds = time.perf_counter() - started
    prep.storage.write_json(join(prep.eval_uri, RECORD_FILE), result.record())
    return result


def run_evaluation(prep: PreparedEvaluation, parallel: bool | None = None,
                   log: Callable[[str], None] = print, started: float | None = None) -> EvalResult:
    """Generate and score every planned clip; ``parallel`` (default ``eval.parallel``) uses Ray actors."""
    started = time.perf_counter() if started is None else started
    parallel = prep.cfg.eval.parallel if parallel is None else parallel
    results, workers = (run_on_ray if parallel else run_in_process)(prep, log)
    return reduce_results(prep, results, workers, parallel, started)


def evaluate_checkpoint(exp_cfg, checkpoint_ref: str | ResolvedCheckpoint | None = None, *,
                        parallel: bool | None = None, storage: Storage | None = None,
                        log: Callable[[str], None] = print) -> EvalResult:
    """Evaluate ``checkpoint_ref`` (default ``eval.checkpoint``: `init`, a storage URI, or an MLflow run id)
    with the experiment's ``eval`` settings. ``parallel=False`` never touches Ray (for callers already inside
    a Ray task, e.g. a sweep trial); ``parallel=True`` starts or joins Ray and spreads videos over actors.
    Nothing is logged to MLflow here: see :func:`asva_platform.artifacts.evaluation.log_evaluation`."""
    started = time.perf_counter()
    prep = prepare_evaluation(exp_cfg, checkpoint_ref, storage, log)
    return run_evaluation(prep, parallel, log, started)
