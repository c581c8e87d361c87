"""The evaluation record: the files beside an evaluation's clips, and its metrics, per-class table and record in MLflow.

A logged evaluation puts, on one run:

* metrics ``eval/<name>`` (``eval/FVD``, ``eval/AlignSync``, ``eval/Sync`` ...), at step = the checkpoint's
  training step (0 when unknown), so a training run's evaluations line up with its loss curve;
* artifacts under ``eval/<evaluation name>/``: ``eval.json`` (the :class:`EvaluationRecord`: the generation
  settings, metrics, per-class numbers and every clip's video URIs -- what the comparison page reads),
  ``per_class.json`` (an MLflow table, shown as a table in the UI) and ``per_class.csv``;
* tags ``asva.eval.latest`` (the newest evaluation's name) and ``asva.eval.uri`` (its output URI).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asva_model.metrics import catalogue
from asva_platform import config as cfgmod
from asva_platform.artifacts.checkpoint import ResolvedCheckpoint
from asva_platform.artifacts.provenance import to_params as provenance_params
from asva_platform.artifacts.records import check_version
from asva_platform.errors import UserError
from asva_platform.inference.config import GenerateConfig
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


@dataclass
class ClipRecord:
    """One generated clip of an evaluation."""

    name: str
    """``<class>/<stem>_clip-<k:02d>``."""
    video: str
    """The test video it comes from (list name)."""
    class_dir: str
    prompt: str
    index: int
    """Window index within the video."""
    start: float
    """Window start (s)."""
    video_uri: str
    """The generated mp4."""
    gt_uri: str = ""
    """The ground truth as mp4 ('' when eval.save_gt_videos was off)."""


@dataclass
class EvaluationRecord:
    """``eval.json``: what an evaluation generated, how, and what it measured."""

    SCHEMA_VERSION = 2
    """1: the generation settings flat in a ``settings`` dict beside the split, metrics and protocol."""

    name: str
    """Evaluation name (also the MLflow artifact folder eval/<name>)."""
    eval_id: str
    """Hash of what determines the generated clips."""
    eval_uri: str
    """Where the clips, scores and record were written."""
    checkpoint: ResolvedCheckpoint
    """What was evaluated."""
    generate: GenerateConfig
    """How every clip was generated."""
    protocol: str
    """`authors`, `exact` or `mixed` (docs/metrics.md, "Reproducing the paper")."""
    quirks: dict[str, Any]
    """Each protocol quirk's dotted key and value."""
    split: str
    max_videos: int
    metric_families: list[str]
    """``eval.metrics.metrics``: which metrics were computed."""
    sampling: dict[str, Any]
    """The sampling section (frames, audio, mel) the clips were cut with."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The reported numbers (:mod:`asva_model.metrics.catalogue` names them)."""
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same per class."""
    clips: list[ClipRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Videos left out: {path, reason, detail}."""
    provenance: dict[str, str] = field(default_factory=dict)
    """What produced the numbers: sha256 of each network used (``net.*``), of the scored videos' names
    (``videos``) and of the text encodings, the protocol and the code version
    (:mod:`asva_platform.artifacts.provenance`); empty in records written before it existed."""

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.SCHEMA_VERSION,
            **cfgmod.to_dict(self),
            "checkpoint": self.checkpoint.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = RECORD_FILE) -> EvaluationRecord:
        data = dict(data)
        if check_version(data.pop("schema_version", 1), cls.SCHEMA_VERSION, where) == 1:
            data = _from_version_1(data)
        data["checkpoint"] = ResolvedCheckpoint.from_json(data["checkpoint"])
        data["generate"] = cfgmod.from_dict(GenerateConfig, data["generate"], f"{where}: generate")
        data["clips"] = [ClipRecord(**c) for c in data.get("clips", [])]
        return cls(**data)


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    settings = data.pop("settings", {})
    generate = {f.name: settings[f.name] for f in dataclasses.fields(GenerateConfig) if f.name in settings}
    quirks = {
        key.replace("eval.", "generate.") if key.split(".")[-1] in generate else key: value
        for key, value in (settings.get("quirks") or {}).items()
    }
    clips = [
        {"class_dir": c.get("class", ""), **{k: v for k, v in c.items() if k != "class"}}
        for c in data.get("clips", [])
    ]
    return {
        **data,
        "generate": generate,
        "protocol": settings.get("protocol", "exact"),
        "quirks": quirks,
        "split": settings.get("split", "test"),
        "max_videos": settings.get("max_videos", 0),
        "metric_families": settings.get("metrics", []),
        "sampling": settings.get("sampling", {}),
        "clips": clips,
    }


def artifact_dir(name: str) -> str:
    return f"{ARTIFACT_ROOT}/{name}"


def per_class_rows(per_class: dict[str, dict[str, float]]) -> list[dict]:
    """One row per class: class, clips, then the table's metric columns present in any class (None = undefined)."""
    present = [c for c in catalogue.table_columns() if any(c in m for m in per_class.values())]
    return [
        {"class": name, "clips": int(m.get(catalogue.NUM_CLIPS, 0)), **{c: m.get(c) for c in present}}
        for name, m in sorted(per_class.items())
    ]


def per_class_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def log_evaluation(
    client,
    run_id: str,
    record: EvaluationRecord,
    run_metrics: dict[str, float] | None = None,
    step: int | None = None,
) -> None:
    """Log an evaluation to MLflow run ``run_id``: its metrics (and ``run_metrics``: what the run took) as
    ``eval/*`` at the checkpoint's training step, its record, its per-class table and tags."""
    from mlflow.entities import Metric, Param, RunTag

    step = record.checkpoint.step if step is None else step
    now = int(time.time() * 1000)
    values = {**record.metrics, **(run_metrics or {})}
    metrics = [
        Metric(METRIC_PREFIX + k, float(v), now, int(step or 0))
        for k, v in values.items()
        if v is not None and math.isfinite(float(v))
    ]
    tags = [RunTag(TAG_EVAL_LATEST, record.name), RunTag(TAG_EVAL_URI, record.eval_uri)]
    # MLflow params never change: a run evaluated twice (another checkpoint step, other code) keeps the first
    # evaluation's; each evaluation's own provenance is in its record (eval.json)
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in provenance_params(record.provenance).items() if k not in existing]
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    folder = artifact_dir(record.name)
    rows = per_class_rows(record.per_class)
    client.log_dict(run_id, record.to_json(), f"{folder}/{RECORD_FILE}")
    client.log_text(run_id, per_class_csv(rows), f"{folder}/per_class.csv")
    if rows:
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        client.log_table(run_id, data=columns, artifact_file=f"{folder}/{PER_CLASS_TABLE}")


def load_evaluation(client, run_id: str, name: str = "") -> EvaluationRecord:
    """The evaluation record of run ``run_id``: evaluation ``name``, default the run's latest."""
    run = client.get_run(run_id)
    name = name or run.data.tags.get(TAG_EVAL_LATEST, "")
    if not name:
        raise UserError(
            f"run {run_id} ({run.info.run_name}) has no evaluation (no {TAG_EVAL_LATEST} tag); "
            "run `python -m jobs.evaluate` on it first"
        )
    where = f"{artifact_dir(name)}/{RECORD_FILE}"
    with tempfile.TemporaryDirectory(prefix="asva-eval-record-") as tmp:
        try:
            path = client.download_artifacts(run_id, where, tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise UserError(
                f"run {run_id}: cannot read evaluation {name!r} ({str(err).splitlines()[0][:160]})"
            ) from None
        return EvaluationRecord.from_json(json.loads(Path(path).read_text()), f"run {run_id}: {where}")
