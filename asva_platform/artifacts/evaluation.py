"""The evaluation record: the files beside an evaluation's clips, and its metrics, per-class table and record in MLflow.

A logged evaluation puts, on one run:

* metrics ``eval/<name>`` (``eval/FVD``, ``eval/AlignSync``, ``eval/Sync`` ...), at step = the checkpoint's
  training step (0 when unknown), so a training run's evaluations line up with its loss curve;
* artifacts under ``eval/<evaluation name>/``: ``eval.json`` (the record: settings, metrics, per-class
  numbers and every clip's video URIs -- what the comparison page reads), ``per_class.json`` (an MLflow
  table, shown as a table in the UI) and ``per_class.csv``;
* tags ``asva.eval.latest`` (the newest evaluation's name) and ``asva.eval.uri`` (its output URI).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from pathlib import Path

from asva_platform.errors import UserError
from asva_platform.tracking import TAG_EVAL_LATEST, TAG_EVAL_URI

RECORD_FILE = "eval.json"
"""Beside an evaluation's clips: its settings, metrics, per-class numbers and every clip's video URIs."""
SCORES_FILE = "scores.npz"
"""Beside an evaluation's clips: every clip's scores (what a sweep's paired comparison reads), one array per
score, plus the clips' names and classes (:data:`CLIP_NAMES_ARRAY`, :data:`CLASSES_ARRAY`)."""
CLIP_NAMES_ARRAY = "clip_names"
CLASSES_ARRAY = "clip_classes"
METRIC_PREFIX = "eval/"
PER_CLASS_TABLE = "per_class.json"
"""The per-class MLflow table, under the evaluation's artifact folder."""
ARTIFACT_ROOT = "eval"
TABLE_COLUMNS = ("FID", "FVD", "IA", "IT", "RelSync", "AlignSync", "Sync", "Sync_ci_low", "Sync_ci_high",
                 "Sync_shifted", "Sync_win_rate", "Sync_gt")


def artifact_dir(name: str) -> str:
    return f"{ARTIFACT_ROOT}/{name}"


def per_class_rows(per_class: dict[str, dict[str, float]]) -> list[dict]:
    """One row per class: class, clips, then the table's metric columns present in any class (None = undefined)."""
    present = [c for c in TABLE_COLUMNS if any(c in m for m in per_class.values())]
    return [{"class": name, "clips": int(m.get("num_clips", 0)), **{c: m.get(c) for c in present}}
            for name, m in sorted(per_class.items())]


def per_class_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def log_evaluation(client, run_id: str, result, step: int | None = None) -> None:
    """Log ``result`` (an :class:`~asva_platform.evaluation.runner.EvalResult`) to MLflow run ``run_id``."""
    from mlflow.entities import Metric, RunTag

    step = result.checkpoint.step if step is None else step
    now = int(time.time() * 1000)
    values = {**result.metrics, "seconds": result.seconds, "clips_generated": result.clips_generated}
    metrics = [Metric(METRIC_PREFIX + k, float(v), now, int(step or 0)) for k, v in values.items()
               if v is not None and math.isfinite(float(v))]
    tags = [RunTag(TAG_EVAL_LATEST, result.name), RunTag(TAG_EVAL_URI, result.eval_uri)]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    folder = artifact_dir(result.name)
    rows = per_class_rows(result.per_class)
    client.log_dict(run_id, result.record(), f"{folder}/eval.json")
    client.log_text(run_id, per_class_csv(rows), f"{folder}/per_class.csv")
    if rows:
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        client.log_table(run_id, data=columns, artifact_file=f"{folder}/{PER_CLASS_TABLE}")


def load_evaluation(client, run_id: str, name: str = "") -> dict:
    """The ``eval.json`` record of run ``run_id``: evaluation ``name``, default the run's latest."""
    run = client.get_run(run_id)
    name = name or run.data.tags.get(TAG_EVAL_LATEST, "")
    if not name:
        raise UserError(f"run {run_id} ({run.info.run_name}) has no evaluation (no {TAG_EVAL_LATEST} tag); "
                        "run `python -m jobs.evaluate` on it first")
    with tempfile.TemporaryDirectory(prefix="asva-eval-record-") as tmp:
        try:
            path = client.download_artifacts(run_id, f"{artifact_dir(name)}/eval.json", tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise UserError(f"run {run_id}: cannot read evaluation {name!r} ({str(err).splitlines()[0][:160]})") from None
        return json.loads(Path(path).read_text())
